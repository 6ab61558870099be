-- Predictions of a version the monitor had not seen registered yet (held_predictions.py): kept here, in the same
-- transaction as their inbox rows, until the version's model.version.registered is consumed (then folded into the
-- windows of their own time and deleted in that transaction) or until the hold runs out.
CREATE TABLE held_predictions (
    event_id   TEXT PRIMARY KEY,           -- the prediction.logged event (one held row per event)
    model      TEXT NOT NULL,
    version    INT NOT NULL,
    deployment TEXT NOT NULL,
    window_key TEXT NOT NULL,              -- the window its rows belong to (state.window_key)
    start_ms   BIGINT NOT NULL,            -- that window's start: the closer holds back the deployment's windows there
    rows       INT NOT NULL,
    at_ms      BIGINT NOT NULL,            -- wall-clock arrival (the hold is about how long we wait)
    data       BYTEA NOT NULL              -- the event's data (JSON), as consumed
);
CREATE INDEX held_predictions_version ON held_predictions (model, version);
CREATE INDEX held_predictions_window ON held_predictions (deployment, start_ms);
CREATE INDEX held_predictions_at ON held_predictions (at_ms);
