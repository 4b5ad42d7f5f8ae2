"""Dead letters of records read more than once (docs/reliability.md, "Bad records on every
consumed topic").

Most consumers read a record once (a committed offset moves past it) and write its dead letter
then. Two read theirs again and again: the dispatcher folds `<prefix>.events` and
`<prefix>.command-results` on every take of a partition, and the delivery worker's fence reader
reads the whole `<prefix>.control` topic from the beginning at every start. A bad record there
would get a new dead letter on every take or start. So a dead letter is identified by its
source, (topic, partition, offset), and these readers write one only when the dead-letter
partition does not hold that source yet (`Recorded`). For the dispatcher that is exact: it reads
the dead letters after its producer's init fenced any previous owner, and writes them in a
transaction of that producer. Two delivery workers starting at the same moment may both write
one (each reads every control partition): readers of `<prefix>.dead-letter` dedupe on the
source.

A dead letter goes to the dead-letter partition of the same number as its source: a reader
finds a partition's letters there, in the order they were written.
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ValidationError

from schemas.wire import DeadLetter
from services.common.reading import read_range
from services.common.settings import Settings

#: What identifies a dead letter: the topic, partition and offset of the record set aside.
Source = tuple[str, int, int]


def source_of(letter: DeadLetter) -> Source:
    return (letter.topic, letter.partition, letter.offset)


async def recorded(
    settings: Settings, dead_letter_topic: str, partition: int, sources: Collection[str]
) -> set[Source]:
    """The sources on the topics ``sources`` whose dead letter is committed in partition
    ``partition`` of the dead-letter topic."""
    found: set[Source] = set()
    async for record in read_range(settings, dead_letter_topic, partition):
        try:
            letter = DeadLetter.model_validate_json(record.value or b"")
        except (ValidationError, ValueError):
            continue  # not one of ours (nothing but the services writes it): not a source
        if letter.topic in sources:
            found.add(source_of(letter))
    return found
