-- Every statement finds a task by user and id, never by id alone, so the key says so.
--
-- With `id` alone as the key, statistics taken before a user's tasks arrived (a new user's
-- import, until autovacuum analyzes the table) make PostgreSQL take that user for one with a
-- single task, and it reached a task through an index on `user_id`, reading every task of the
-- user: 2,900 buffers for a get by id instead of 3. With both columns in the key the exact
-- lookup is the cheapest plan whatever the statistics say (tests/tests/api/plans.rs). Ids
-- stay v7 UUIDs the app makes, unique in practice; uniqueness per user is what the app relies
-- on.
--
-- Rebuilding the key locks `tasks` for as long as building one index takes.
alter table tasks drop constraint tasks_pkey;
alter table tasks add constraint tasks_pkey primary key (user_id, id);
