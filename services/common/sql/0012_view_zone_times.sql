-- recipient_timezone mode in the views (issue 11): when the message really starts (the first
-- zone of its audience to reach the send time) and each zone's due time and pending count,
-- beside the send time in the account's zone (`send_at`). Both are functions of the event history
-- (core/views.py first_release_at, zone_times); NULL until the message's row is next written.
--   first_release_at  the first release: the first zone's due time (else the send time)
--   zone_times        [{"zone", "due_at", "pending"}], first due first (recipient_timezone only)
ALTER TABLE view_messages
    ADD COLUMN first_release_at timestamptz,
    ADD COLUMN zone_times       jsonb;
