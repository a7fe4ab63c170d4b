-- Transactional outbox: every task change inserts its CloudEvents here in the same statement,
-- and publishers move them to Dapr. `seq` is the publishing order.
--
-- A row is pending while `delivered_at` is null. Publishers hold a per-user lease in
-- `outbox_leases` so that one user's events go out one at a time, in order; a lease expires by
-- itself when its holder dies.

create table outbox (
    seq             bigint generated always as identity primary key,
    event_id        uuid not null unique,
    user_id         text not null,
    topic           text not null,
    event           jsonb not null,
    created_at      timestamptz not null default now(),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    delivered_at    timestamptz
);

-- What publishers scan: pending events per user in order, and users with due events.
create index outbox_pending on outbox (user_id, seq) where delivered_at is null;
create index outbox_due on outbox (next_attempt_at) where delivered_at is null;
-- What pruning scans.
create index outbox_delivered on outbox (delivered_at) where delivered_at is not null;

create table outbox_leases (
    user_id    text primary key,
    holder     uuid not null,
    expires_at timestamptz not null
);
