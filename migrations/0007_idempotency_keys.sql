-- Idempotency-Key on POST /api/{user_id}/tasks (crates/todo-core/src/tasks/idempotency.rs): the
-- first successful answer to each key, per user, kept 24 hours. The create claims its key in the
-- same statement that inserts the task, so the key, the task and its events commit together.
-- `fingerprint` is the SHA-256 of the request body in canonical JSON; `body` is the answer byte
-- for byte. The relay deletes expired keys; until then an expired key is reclaimed in place.

create table idempotency_keys (
    user_id     text not null,
    key         text not null,
    fingerprint text not null,
    status      smallint not null,
    task_id     uuid not null,
    etag        text not null,
    body        text not null,
    created_at  timestamptz not null default now(),
    primary key (user_id, key)
);

create index idempotency_keys_created on idempotency_keys (created_at);
