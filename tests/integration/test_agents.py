"""Agent frameworks against the mesh (issue 13): each runs an agent with a function tool end to
end — the model (the simulator) calls the tool, the framework runs it and sends the result
back, the model answers — over Chat Completions and over the Responses API.

The simulator calls a tool whose name the user's message contains and answers a tool result
with "Tool result: <result>", so the final answer proves the round trip happened.
"""

from __future__ import annotations

import json

import agents
import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from stellwerk.supervisor import Mesh

API_KEY = "sk-stellwerk-demo"
FORECAST = "Bonn: 14 Grad, bewölkt"

agents.set_tracing_disabled(True)  # the SDK would export traces to OpenAI: offline, and not ours to send


@agents.function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return FORECAST if city else "unknown"


def client(mesh: Mesh) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mesh.gateway_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_openai_agents_runs_a_function_tool_through_the_mesh(mesh: Mesh, api: str) -> None:
    model: agents.Model
    if api == "chat_completions":
        model = agents.OpenAIChatCompletionsModel(model="stellwerk", openai_client=client(mesh))
    else:
        model = agents.OpenAIResponsesModel(model="stellwerk", openai_client=client(mesh))
    agent = agents.Agent(name="claims-assistant", instructions="Answer briefly.", tools=[get_weather], model=model)
    result = await agents.Runner.run(agent, "Bitte get_weather für Bonn aufrufen.")
    calls = [item for item in result.new_items if isinstance(item, agents.ToolCallItem)]
    outputs = [item for item in result.new_items if isinstance(item, agents.ToolCallOutputItem)]
    assert len(calls) == 1 and len(outputs) == 1
    assert outputs[0].output == FORECAST
    assert FORECAST in str(result.final_output)


def test_langchain_openai_runs_a_tool_loop_through_the_mesh(mesh: Mesh) -> None:
    @tool
    def lookup_claim(claim_id: str) -> str:
        """Status of an insurance claim."""
        return json.dumps({"claim_id": claim_id, "status": "reguliert"})

    llm = ChatOpenAI(model="stellwerk", base_url=mesh.gateway_url + "/v1", api_key=API_KEY,  # type: ignore[arg-type]
                     max_retries=0, http_client=httpx.Client(timeout=60))
    bound = llm.bind_tools([lookup_claim])
    messages: list[object] = [HumanMessage("Wie steht lookup_claim für Schaden 4711?")]
    first = bound.invoke(messages)  # type: ignore[arg-type]
    assert len(first.tool_calls) == 1 and first.tool_calls[0]["name"] == "lookup_claim"
    call = first.tool_calls[0]
    messages += [first, ToolMessage(lookup_claim.invoke(call["args"]), tool_call_id=call["id"])]
    final = bound.invoke(messages)  # type: ignore[arg-type]
    assert "reguliert" in str(final.content)
    assert not getattr(final, "tool_calls", None)
