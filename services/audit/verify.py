"""Verification of a whole audit trail: every partition's chain, its checkpoints and seals.

Pure and incremental: feed checkpoints first (they are few), then records in stream order;
``finish`` returns one report per partition with the first break, if any. The same code checks
the live AUDIT stream, a copy of it and an exported JSONL file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from schemas.events import AuditCheckpoint, AuditRecord
from services.audit.chain import ChainBreak, ChainCursor, Problem, record_hash
from services.audit.checkpoint import VerifyingKey, check_seal


@dataclass(slots=True)
class PartitionReport:
    partition: str
    records: int = 0  # records checked
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints_matched: int = 0
    anchored_at: int = 0  # 0: the check started at genesis; N: at the checkpoint of record N
    first_break: ChainBreak | None = None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    partitions: tuple[PartitionReport, ...]
    checkpoints: int
    unverifiable_seals: int  # HMAC seals present but no key given to check them

    @property
    def ok(self) -> bool:
        return all(p.first_break is None for p in self.partitions)

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)


@dataclass(slots=True)
class _Partition:
    report: PartitionReport
    anchor: AuditCheckpoint | None = None
    checkpoints: dict[int, AuditCheckpoint] = field(default_factory=dict)
    cursor: ChainCursor | None = None
    event_ids: set[str] = field(default_factory=set)
    chain_break: ChainBreak | None = None
    seal_break: ChainBreak | None = None

    def broken(self, seq: int, problem: Problem) -> None:
        if self.chain_break is None:
            self.chain_break = ChainBreak(self.report.partition, seq, problem)


class ChainVerifier:
    def __init__(
        self,
        checkpoints: Iterable[AuditCheckpoint] = (),
        *,
        key: VerifyingKey | None = None,
        anchors: Mapping[str, AuditCheckpoint] | None = None,
    ) -> None:
        """``anchors``: per partition, a checkpoint to start from instead of genesis (``--since``)."""
        self._partitions: dict[str, _Partition] = {}
        self._checkpoints = 0
        self._unverifiable = 0
        for partition, anchor in (anchors or {}).items():
            self._state(partition).anchor = anchor
        for checkpoint in checkpoints:
            self.add_checkpoint(checkpoint, key)

    def _state(self, partition: str) -> _Partition:
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition(PartitionReport(partition))
        return state

    def add_checkpoint(self, checkpoint: AuditCheckpoint, key: VerifyingKey | None = None) -> None:
        state = self._state(checkpoint.partition)
        self._checkpoints += 1
        seal = check_seal(checkpoint, key)
        if seal == "invalid":
            if state.seal_break is None or checkpoint.seq < state.seal_break.seq:
                state.seal_break = ChainBreak(checkpoint.partition, checkpoint.seq, "bad_seal")
            return
        self._unverifiable += seal == "unverifiable"
        known = state.checkpoints.get(checkpoint.seq)
        if known is not None and known.head_hash != checkpoint.head_hash:
            state.broken(checkpoint.seq, "checkpoint_mismatch")
        state.checkpoints[checkpoint.seq] = checkpoint

    def add_malformed(self, partition: str, kind: str) -> None:
        """Bytes on a chain or checkpoint subject that do not decode: a break where they stand."""
        state = self._state(partition)
        if kind == "checkpoint":
            state.seal_break = ChainBreak(partition, 0, "malformed_checkpoint")
        elif state.chain_break is None:
            seq = state.cursor.expected_seq if state.cursor else (state.report.last_seq or 0) + 1
            state.broken(seq, "malformed_record")

    def add(self, record: AuditRecord) -> None:
        state = self._state(record.partition)
        if state.chain_break is not None:
            return
        if state.cursor is None and not self._start(state, record):
            return
        assert state.cursor is not None
        broken = state.cursor.check(record)
        if broken is not None:
            state.chain_break = broken
            return
        if record.event.event_id in state.event_ids:
            state.broken(record.seq, "duplicate_event")
            return
        state.event_ids.add(record.event.event_id)
        checkpoint = state.checkpoints.get(record.seq)
        if checkpoint is not None:
            if checkpoint.head_hash != record.hash:
                state.broken(record.seq, "checkpoint_mismatch")
                return
            state.report.checkpoints_matched += 1
        report = state.report
        report.records += 1
        report.first_seq = report.first_seq or record.seq
        report.last_seq = record.seq

    def _start(self, state: _Partition, record: AuditRecord) -> bool:
        """Place the cursor at the first record seen; False when this record is to be skipped."""
        partition = record.partition
        anchor = state.anchor
        if anchor is not None:
            if record.seq < anchor.seq:
                return False  # before the anchor: vouched for by its seal, not re-checked
            if record.seq == anchor.seq:
                if record_hash(record) != record.hash:
                    state.broken(record.seq, "hash_mismatch")
                elif record.hash != anchor.head_hash:
                    state.broken(record.seq, "checkpoint_mismatch")
                else:
                    state.report.checkpoints_matched += 1
                    state.cursor = ChainCursor(partition, anchor.seq + 1, anchor.head_hash)
                    state.report.anchored_at = anchor.seq
                return False
            state.cursor = ChainCursor(partition, anchor.seq + 1, anchor.head_hash)
            state.report.anchored_at = anchor.seq
            return True
        if record.seq == 1:
            state.cursor = ChainCursor(partition)
            return True
        # An exported excerpt starts after a checkpoint: the record before it is vouched for.
        before = state.checkpoints.get(record.seq - 1)
        if before is not None:
            state.cursor = ChainCursor(partition, record.seq, before.head_hash)
            state.report.anchored_at = before.seq
            return True
        state.broken(record.seq, "unanchored")
        return False

    def finish(self) -> VerifyReport:
        reports = []
        for state in self._partitions.values():
            report = state.report
            if state.chain_break is None:
                # A checkpoint beyond the last record: the newest records were cut off.
                reached = report.last_seq or report.anchored_at or (state.anchor.seq if state.anchor else 0)
                if any(seq > reached for seq in state.checkpoints):
                    state.broken(reached + 1, "missing_record")
            breaks = [b for b in (state.chain_break, state.seal_break) if b is not None]
            report.first_break = min(breaks, key=lambda b: b.seq) if breaks else None
            reports.append(report)
        reports.sort(key=lambda r: r.partition)
        return VerifyReport(tuple(reports), self._checkpoints, self._unverifiable)
