-- The fence (docs/delivery.md, issue 12). A send that the delivery worker did not hand to SMTP
-- because its message was paused or canceled first ends `returned`: reported to the message as
-- not sent (RecordDeliveryOutcomes.returned), and claimable again only by a NEWER release of the
-- same contact (after a resume):
--   release   the sequence number of the RecipientsReleased event the claimed send came from;
--             a returned row is re-claimed only by a send with a higher one, so the one
--             contact's send is handed to SMTP by at most one claim per release.
ALTER TABLE delivery_ledger
    DROP CONSTRAINT delivery_ledger_state_check,
    ADD CONSTRAINT delivery_ledger_state_check
        CHECK (state IN ('claimed', 'deferred', 'delivered', 'failed', 'unknown', 'returned')),
    ADD COLUMN release bigint NOT NULL DEFAULT 0;

DROP INDEX delivery_ledger_unreported;
CREATE INDEX delivery_ledger_unreported ON delivery_ledger (topic, partition)
    WHERE NOT reported AND state IN ('delivered', 'failed', 'unknown', 'returned');
