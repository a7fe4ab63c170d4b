-- Tasks, one row per task, always read and written with `user_id` in the WHERE clause.
--
-- Times are timestamptz in UTC. `priority` is a rank (1 low, 2 medium, 3 high) so sorting by it
-- is an index scan. `tag_keys` holds the lower-cased tags for case-insensitive any-of filters.
-- `version` grows with every write; updates are conditional on it (lost-update protection) and it
-- is the task's ETag.

create extension if not exists pg_trgm;

create table tasks (
    id           uuid primary key,
    user_id      text not null check (length(user_id) between 1 and 128),
    title        text not null check (length(title) between 1 and 200),
    description  text check (length(description) <= 1000),
    completed    boolean not null default false,
    completed_at timestamptz,
    priority     smallint not null default 2 check (priority between 1 and 3),
    tags         text[] not null default '{}' check (cardinality(tags) <= 10),
    tag_keys     text[] not null default '{}',
    due_at       timestamptz,
    recurrence   jsonb,
    created_at   timestamptz not null,
    updated_at   timestamptz not null,
    version      bigint not null default 1,
    constraint tasks_completed_at_matches check (completed = (completed_at is not null))
);

-- One index per sort key, each ending in id for the stable tie-break the keyset cursor uses.
-- The expressions must stay identical to todo-core's `SortKey::expression`.
create index tasks_by_created on tasks (user_id, created_at, id);
create index tasks_by_due on tasks (user_id, (coalesce(due_at, '9999-12-31 00:00:00+00'::timestamptz)), id);
create index tasks_by_priority on tasks (user_id, priority, id);
create index tasks_by_title on tasks (user_id, lower(title), id);
create index tasks_by_tag on tasks using gin (tag_keys);
-- Keyword search (`q`) is a case-insensitive substring match; trigrams make it indexable.
create index tasks_by_text on tasks using gin ((title || ' ' || coalesce(description, '')) gin_trgm_ops);
