-- Recurring series and idempotent event intake.
--
-- A recurring task is one occurrence of a series. Completing it creates the next occurrence
-- (todo-core `series`), and the database, not the code, guarantees that happens at most once:
-- a series has at most one task per occurrence number (`tasks_series_occurrence`).
--
-- - `series_id`: the id of the series' first task. Null means the task is its own series (rows
--   written before this migration, or by a build that predates it), hence
--   `coalesce(series_id, id)` wherever a series is meant. New rows always set it.
-- - `occurrence`: the task's position in its series, 0 for the first.
-- - `series_anchor`, `anchor_occurrence`: the due time the series' calendar counts from, and
--   the occurrence it belongs to (normally the first task's due time and 0). Occurrences are
--   computed from the anchor, never from the previous, possibly clamped, due time, so a monthly
--   series stays on its day: Jan 31 -> Feb 28 -> Mar 31. When a user moves a due date or
--   changes the rule, the series re-anchors at that task.

alter table tasks
    add column series_id         uuid,
    add column occurrence        integer not null default 0 check (occurrence >= 0),
    add column series_anchor     timestamptz,
    add column anchor_occurrence integer not null default 0,
    add constraint tasks_anchor_occurrence_in_series
        check (anchor_occurrence between 0 and occurrence);

update tasks set series_anchor = due_at where due_at is not null;

-- The exactly-once guarantee of the recurrence engine: a second next occurrence (redelivery,
-- concurrent delivery, un-complete and re-complete) conflicts here and is skipped. Scoped by
-- user like every other access, so no event about one user's series can block another's.
create unique index tasks_series_occurrence
    on tasks (user_id, (coalesce(series_id, id)), occurrence);

-- CloudEvents the intake has acted on, keyed as the spec makes them unique: (source, id).
-- The marker is inserted in the same statement as the event's effect, so an effect exists if
-- and only if its marker does, across restarts and replicas. Rows older than the redelivery
-- horizon are pruned by the relay (todo-core `intake::prune_processed`).
create table processed_events (
    source       text not null,
    event_id     text not null,
    processed_at timestamptz not null default now(),
    primary key (source, event_id)
);

create index processed_events_by_time on processed_events (processed_at);
