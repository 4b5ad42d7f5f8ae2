"""Never twice: dedupe by contact id and by normalized address; exclusions."""

from datetime import timedelta

from core import RecipientStatus, evolve
from schemas import AddRecipients, RecipientsExcluded, RemoveRecipients, ScheduleMessage

from .dsl import T0, Sim, cmd, contact, ev


def test_a_contact_added_twice_is_released_once() -> None:
    sim = Sim(audience=[contact("a"), contact("b")])
    sim.do(cmd(AddRecipients, contacts=(contact("a"),)))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=3))
    assert sim.released == ["a", "b"]


def test_the_same_address_under_two_contact_ids_gets_one_copy() -> None:
    sim = Sim(
        audience=[
            contact("a", email="Jo@Example.org"),
            contact("b", email="  jo@example.ORG"),
            contact("c"),
        ]
    )
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=3))
    assert sim.released == ["a", "c"]
    assert sim.s.book.status_of("b") is RecipientStatus.SKIPPED
    assert sim.s.book.reason_of("b") == "duplicate_address"


def test_a_duplicate_address_added_after_the_first_copy_went_out_is_skipped() -> None:
    sim = Sim(audience=[contact("a", email="jo@example.org")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(AddRecipients, contacts=(contact("b", email="JO@example.org"),)))
    sim.run(until=T0 + timedelta(seconds=3))
    assert sim.released == ["a"]
    assert sim.s.book.reason_of("b") == "duplicate_address"


def test_when_the_first_holder_of_an_address_is_removed_the_other_gets_it() -> None:
    sim = Sim(audience=[contact("a", email="jo@example.org"), contact("b", email="jo@example.org")])
    sim.do(cmd(RemoveRecipients, contact_ids=("a",)))
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=3))
    assert sim.released == ["b"]


def test_excluded_contacts_are_never_released() -> None:
    sim = Sim(audience=[contact("a"), contact("b", email="bee@example.org"), contact("c")])
    excluded = ev(
        RecipientsExcluded, contact_ids=("a",), addresses=("BEE@example.org",)
    ).model_copy(update={"sequence": sim.s.version + 1})
    sim.state = evolve(sim.s, excluded)
    assert sim.s.book.status_of("a") is RecipientStatus.EXCLUDED
    assert sim.s.book.status_of("b") is RecipientStatus.EXCLUDED
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=3))
    assert sim.released == ["c"]
