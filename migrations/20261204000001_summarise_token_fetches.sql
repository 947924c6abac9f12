-- Every audited token used to write a page of the (subject, at) index at a random place,
-- which was most of the internal API's cost under load. /microsoft-status only needs each
-- key's latest fetch per user, so that is kept in a small table of its own, updated in the
-- same transaction as the audit rows; the audit table keeps only its append-only time index.

DROP INDEX audit_events_subject;

CREATE TABLE token_fetches (
    subject TEXT NOT NULL,
    actor TEXT NOT NULL,
    last_at BIGINT NOT NULL,
    PRIMARY KEY (subject, actor)
);

INSERT INTO token_fetches (subject, actor, last_at)
SELECT subject, actor, MAX(at) FROM audit_events
WHERE action = 'token.issue' AND outcome = 'ok'
GROUP BY subject, actor;
