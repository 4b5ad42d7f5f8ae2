"""CPU of building one mail, single part against text + HTML (docs/delivery.md, "Text and HTML
parts"). Stand-alone, not part of ``make bench``: ``.venv/bin/python -m bench.mail_parts``."""

from __future__ import annotations

import timeit
import uuid

from schemas import Contact, Content
from services.delivery.mail import compose

CALLS = 20_000


def main() -> None:
    ada = Contact(contact_id="ada", email="ada@example.org", attributes={"first_name": "Ada"})
    text = "Dear {{first_name|friend}},\n" + "Some news text line here.\n" * 40
    html = "<p>Dear {{first_name|friend}},</p>\n" + "<p>Some news <b>text</b> line.</p>\n" * 40
    one = Content(name="N", from_address="n@example.org", subject="Hi {{first_name}}", body=text)
    two = one.model_copy(update={"html_body": html})
    sid, mid = uuid.uuid4(), uuid.uuid4()
    for name, content in (("single part", one), ("text + HTML", two)):
        seconds = timeit.timeit(
            lambda c=content: compose(
                send_id=sid, message_id=mid, content=c, contact=ada, domain="x.test"
            ),
            number=CALLS,
        )
        print(f"{name}: {seconds / CALLS * 1e6:.1f} µs per mail ({CALLS} calls)")


if __name__ == "__main__":
    main()
