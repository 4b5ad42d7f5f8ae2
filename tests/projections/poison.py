"""A history with poisoned records between good ones (issue 10), for the projections' fast and
integration tests: every event is one the processor could have written (built by the core through
tests/histories.py), then two are altered as old histories hold them."""

from __future__ import annotations

from uuid import UUID

from bench.harness.histories import Simulator, contacts
from schemas import Actor, Content, Event, RecipientsReleased

INT32 = 2**31 - 1

OTHER = Actor(kind="user", account_id="acct-b", user_id="bob")
# Built without validation: the edge refuses NULs now; old histories hold them.
NUL_CONTENT = Content.model_construct(
    name="Nul\x00name",
    from_address="news@example.org",
    from_name=None,
    subject="Hi\x00there",
    body="a\x00b",
)


def poisoned_history(
    sim: Simulator | None = None,
) -> tuple[list[Event], dict[str, UUID], dict[str, int]]:
    """Good events of two accounts on one partition with two poisoned ones between them: a
    draft whose content holds NULs (acct-b) and a release whose batch number is past int32
    (acct-a); after them, more good events of both accounts."""
    sim = sim or Simulator()
    ids: dict[str, UUID] = {}
    at: dict[str, int] = {}
    ids["a1"] = sim.create()
    ids["nul"] = sim.create(actor=OTHER)
    nul = sim.events[-1]
    sim.events[-1] = nul.model_copy(update={"content": NUL_CONTENT})
    at["nul"] = len(sim.events) - 1
    ids["big"] = sim.create()
    sim.add(ids["big"], contacts(3))
    sim.send_now(ids["big"])
    released = [e for e in sim.tick() if isinstance(e, RecipientsReleased)]
    assert released
    at["big"] = sim.events.index(released[0])
    sim.events[at["big"]] = released[0].model_copy(update={"batch": INT32 + 1})
    sim.deliver(ids["big"], delivered=tuple(released[0].contact_ids))
    ids["b2"] = sim.create(actor=OTHER)
    ids["a2"] = sim.create()
    return sim.events, ids, at
