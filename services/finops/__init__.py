"""FinOps: prices usage, keeps budgets."""
