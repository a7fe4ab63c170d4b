-- A publisher that finds a user's lease busy leaves its events to the holder instead of
-- waiting: its claim sets `recheck` on the holder's lease (under the row lock), and the holder
-- reads the flag when it releases the lease and runs another round if it is set.
alter table outbox_leases add column recheck boolean not null default false;
