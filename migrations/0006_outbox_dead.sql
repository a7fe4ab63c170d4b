-- Poison events and per-event backoff (todo_core::outbox).
--
-- Only the head of a user's queue is ever backed off (`next_attempt_at`); the events behind it
-- wait for it. An event that keeps failing while the sidecar accepts other events is parked as
-- dead after `outbox_max_attempts` attempts, so that the user's later events flow:
-- `first_failed_at` is when its failures began, `dead_at` when it was parked. Dead rows are
-- kept with their `last_error` until an operator requeues them (`todo_core::outbox::REQUEUE_DEAD`,
-- README "Delivery guarantees") or deletes them; pruning leaves them alone.

alter table outbox
    add column first_failed_at timestamptz,
    add column dead_at         timestamptz;

-- Pending now means neither delivered nor dead. The due check reads the head of each user's
-- queue through this index, so the index on `next_attempt_at` goes.
drop index outbox_pending;
create index outbox_pending on outbox (user_id, seq) where delivered_at is null and dead_at is null;
drop index outbox_due;

create index outbox_dead on outbox (dead_at) where dead_at is not null;
