-- Reminders: a task with a due date may carry one reminder, announced on the `reminders` topic
-- when its time comes (todo-core `tasks::reminder`, `reminders`).
--
-- - `remind_before_minutes`: set for a reminder relative to the due date (0 to 525600, a
--   year); null for an absolute reminder or none.
-- - `remind_at`: the effective fire time, always: the absolute time the user set, or
--   `due_at - remind_before_minutes`, recomputed by the app whenever the due date moves. The
--   API shows it as `reminder_fires_at` (and shows `remind_at` only for an absolute reminder,
--   the form the user set it in).
-- - `reminder_fired_at`: when the sweep fired it. Null while pending; cleared whenever the fire
--   time moves, so a moved reminder fires again.
--
-- The sweep fires a reminder by setting `reminder_fired_at` with a conditional UPDATE that also
-- inserts its event into the outbox, one statement per reminder; that condition, not a lock,
-- makes it fire once across replicas (see todo-core `reminders`).

alter table tasks
    add column remind_before_minutes integer,
    add column remind_at             timestamptz,
    add column reminder_fired_at     timestamptz,
    add constraint tasks_reminder_minutes_range
        check (remind_before_minutes between 0 and 525600),
    -- A reminder belongs to a due date and does not come after it.
    add constraint tasks_reminder_before_due
        check (remind_at is null or (due_at is not null and remind_at <= due_at)),
    -- A relative reminder's fire time follows its due date.
    add constraint tasks_reminder_relative_to_due
        check (remind_before_minutes is null
               or (remind_at is not null
                   and remind_at = due_at - make_interval(mins => remind_before_minutes))),
    add constraint tasks_reminder_fired_has_reminder
        check (reminder_fired_at is null or remind_at is not null);

-- What the sweep scans: pending reminders of open tasks by fire time. The predicate must stay
-- identical to the WHERE clause of todo-core `reminders::due`.
create index tasks_reminders_due on tasks (remind_at)
    where reminder_fired_at is null and not completed;
