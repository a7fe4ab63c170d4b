//! All SQL of the transactional outbox (schema: migrations/0002_outbox.sql and
//! 0005_outbox_recheck.sql) and the rules of delivering it.
//!
//! Task writes insert event rows in the same statement (see `tasks::store`). Publishing is
//! separate and may fail at any time, so:
//! - a user's events are published by one publisher at a time, in `seq` order: the publisher
//!   holds a per-user lease (a row in `outbox_leases` with an expiry, taken over only once
//!   expired), which also survives crashes by expiring;
//! - a publisher that finds the lease busy does not wait: it flags the lease, and the holder
//!   runs another round before letting go;
//! - a failed publish stops that user's batch (no later event overtakes it) and pushes the
//!   user's next attempt back exponentially;
//! - delivered rows stay for `retention` and are then pruned.

use crate::sql::{SqlValue, Statement};
use uuid::Uuid;

/// An undelivered event as the publisher reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub event: serde_json::Value,
}

/// Column order of [`claim_pending`]; publishers decode rows in this order.
pub const PENDING_COLUMNS: &str = "seq, event_id, topic, event";

/// Claims the publishing lease of `user_id` for `holder` and, in the same round trip, reads up
/// to `limit` of the user's undelivered events in order, if their backoff has passed.
///
/// No row: another holder has an unexpired lease; the claim then sets its `recheck`, so that
/// the holder runs another round for what this caller committed (see [`finish_round`]). One
/// row of nulls: claimed, nothing due. Otherwise the events.
///
/// The events are read with the statement's snapshot, taken before the claim: a previous
/// holder that marked events delivered and released the lease in between is only seen through
/// the row lock, whose re-check drops rows delivered since the snapshot. Without
/// `for no key update` those events would be published twice.
///
/// `next_attempt_at` is checked on the first pending row only: once the head is due, the
/// whole batch goes out in order.
pub fn claim_pending(user_id: &str, holder: Uuid, lease_seconds: i32, limit: i64) -> Statement {
    Statement::new(
        format!(
            "with claimed as (insert into outbox_leases as lease (user_id, holder, expires_at) \
             values ($1::text, $2::uuid, now() + make_interval(secs => $3::int4)) \
             on conflict (user_id) do update set \
             holder = case when lease.expires_at < now() then excluded.holder \
                      else lease.holder end, \
             expires_at = case when lease.expires_at < now() then excluded.expires_at \
                          else lease.expires_at end, \
             recheck = lease.expires_at >= now() \
             returning holder = $2::uuid as ours) \
             select {PENDING_COLUMNS} from claimed left join lateral \
             (select {PENDING_COLUMNS} from outbox where claimed.ours and user_id = $1::text \
              and delivered_at is null \
              and (select min(next_attempt_at) from outbox where user_id = $1::text \
                   and delivered_at is null) <= now() \
              order by seq limit $4::int8 for no key update) pending on true \
             where claimed.ours order by seq"
        ),
        vec![
            SqlValue::Text(user_id.to_owned()),
            SqlValue::Uuid(holder),
            SqlValue::Int32(lease_seconds),
            SqlValue::Int64(limit),
        ],
    )
}

/// Ends a publishing round in one round trip: marks `delivered` (scoped by user, so a stray
/// sequence number cannot touch another user's rows) and releases `holder`'s lease, returning
/// its `recheck`: true when another publisher found the lease busy meanwhile and left its
/// events to this holder. The delete waits for such a claim's row lock and sees its flag, and
/// a claim after the delete takes the lease itself, so no writer's events are left behind.
/// No row: the lease had expired and was taken over.
pub fn finish_round(user_id: &str, holder: Uuid, delivered: &[i64]) -> Statement {
    Statement::new(
        "with delivered as (update outbox set delivered_at = now(), attempts = attempts + 1, \
         last_error = null \
         where user_id = $1::text and seq = any($3::int8[]) and delivered_at is null) \
         delete from outbox_leases where user_id = $1::text and holder = $2::uuid \
         returning recheck",
        vec![
            SqlValue::Text(user_id.to_owned()),
            SqlValue::Uuid(holder),
            SqlValue::Int64Array(delivered.to_vec()),
        ],
    )
}

/// Records a failed attempt on `seq` and backs off every pending event of the user:
/// 1 s, 2 s, 4 s, ... capped at 5 minutes.
pub fn mark_failed(user_id: &str, seq: i64, error: &str) -> Statement {
    let error: String = error.chars().take(500).collect();
    Statement::new(
        "with failed as (update outbox set attempts = attempts + 1, last_error = $3::text \
         where user_id = $1::text and seq = $2::int8 returning attempts) \
         update outbox set next_attempt_at = now() + make_interval(secs => \
         least(300, power(2, least((select attempts from failed), 9) - 1))::int4) \
         where user_id = $1::text and delivered_at is null",
        vec![
            SqlValue::Text(user_id.to_owned()),
            SqlValue::Int64(seq),
            SqlValue::Text(error),
        ],
    )
}

/// Users with events due for publishing, oldest first.
pub fn due_users(limit: i64) -> Statement {
    Statement::new(
        "select user_id from outbox where delivered_at is null \
         group by user_id having min(next_attempt_at) <= now() \
         order by min(seq) limit $1::int8",
        vec![SqlValue::Int64(limit)],
    )
}

/// Deletes delivered rows older than the retention period.
pub fn prune(retention_hours: i32) -> Statement {
    Statement::new(
        "delete from outbox where delivered_at < now() - make_interval(hours => $1::int4)",
        vec![SqlValue::Int32(retention_hours)],
    )
}

/// The publish URL: DESIGN.md section 3. `metadata.partitionKey` is what Dapr's Kafka
/// publisher uses as the record key; without it per-user ordering is lost.
pub fn publish_url(dapr_url: &str, pubsub: &str, topic: &str, partition_key: &str) -> String {
    use std::fmt::Write as _;
    let mut url = format!(
        "{}/v1.0/publish/{}/{}?metadata.partitionKey=",
        dapr_url.trim_end_matches('/'),
        encode_segment(pubsub),
        encode_segment(topic)
    );
    for byte in form_urlencoded::byte_serialize(partition_key.as_bytes()) {
        let _ = write!(url, "{byte}");
    }
    url
}

/// The bulk publish URL (Dapr's alpha bulk API); the partition key applies to every entry.
pub fn bulk_publish_url(dapr_url: &str, pubsub: &str, topic: &str, partition_key: &str) -> String {
    publish_url(dapr_url, pubsub, topic, partition_key).replacen(
        "/v1.0/publish/",
        "/v1.0-alpha1/publish/bulk/",
        1,
    )
}

fn encode_segment(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Media type of a structured-mode CloudEvent body.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_url_carries_the_partition_key() {
        assert_eq!(
            publish_url(
                "http://127.0.0.1:3500/",
                "kafka-pubsub",
                "tasks",
                "user@x|1"
            ),
            "http://127.0.0.1:3500/v1.0/publish/kafka-pubsub/tasks?metadata.partitionKey=user%40x%7C1"
        );
    }

    #[test]
    fn statements_scope_by_user() {
        for statement in [
            claim_pending("u", Uuid::nil(), 30, 10),
            finish_round("u", Uuid::nil(), &[1, 2]),
            mark_failed("u", 1, "boom"),
        ] {
            assert!(statement.sql.contains("user_id = $1"), "{}", statement.sql);
            assert_eq!(statement.params[0], SqlValue::Text("u".into()));
        }
    }
}
