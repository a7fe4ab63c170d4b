//! All SQL of the transactional outbox (schema: migrations/0002_outbox.sql,
//! 0005_outbox_recheck.sql and 0006_outbox_dead.sql) and the rules of delivering it.
//!
//! Every write that causes events stores them in the same statement ([`push_outbox`]: task
//! writes, the next occurrence, a reminder firing). Publishing is separate and may fail at any
//! time, so:
//! - a user's events are published by one publisher at a time, in `seq` order, one publish
//!   answered before the next is sent (Dapr's bulk publish is neither ordered nor
//!   transactional, so a partly failed bulk could be retried in an order consumers can see):
//!   the publisher holds a per-user lease (a row in `outbox_leases` with an expiry, taken over
//!   only once expired), which also survives crashes by expiring;
//! - a publisher that finds the lease busy does not wait: it flags the lease, and the holder
//!   runs another round before letting go;
//! - a write may claim the lease in its own statement ([`WriteClaim`]); holding it with
//!   nothing older pending, the request publishes the events it stored without reading the
//!   queue (one statement fewer per write), and otherwise goes on as any publisher would;
//! - a round never outlives its lease: a publish that could not finish before the lease
//!   expires is not started ([`fits_in_lease`]), so no other publisher can take over while
//!   one is in flight and send it again;
//! - a failed publish stops that user's run (no later event overtakes it) and backs off the
//!   failed event, the head of the user's queue, exponentially; events behind it wait for it;
//! - an event that keeps failing while the sidecar accepts other events is a poison event:
//!   after `max_attempts` it is parked as dead (kept, with its last error) so that the user's
//!   later events flow ([`mark_failed`]); [`REQUEUE_DEAD`] puts parked events back;
//! - delivered rows stay for `retention` and are then pruned; dead rows stay until requeued
//!   or deleted by an operator.

use crate::sql::{Builder, Column, Row, SqlValue, Statement, select_list};
use std::time::Duration;
use uuid::Uuid;

/// An event to store with a task change, for the relay to publish (see `events`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub event_id: Uuid,
    pub user_id: String,
    pub topic: String,
    pub event: serde_json::Value,
}

/// Adds `, outbox_rows as (insert ...)` that stores the events only if the task write (the
/// CTE `written`) touched a row. `ord` keeps the outbox sequence in the order the events were
/// given.
///
/// With a `claim` the statement also claims the user's publishing lease for the events it
/// stored (see [`WriteClaim`]). Returns what the statement's final select must append to its
/// columns for [`Claimed::decode`]: nothing without events or claim.
pub fn push_outbox(sql: &mut Builder, events: &[OutboxRow], claim: Option<&WriteClaim>) -> String {
    if events.is_empty() {
        return String::new();
    }
    sql.push(
        ", outbox_rows as (insert into outbox (event_id, user_id, topic, event) \
         select v.event_id, v.user_id, v.topic, v.event from (values ",
    );
    let rows: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(ord, row)| {
            let ord = sql.bind(SqlValue::Int32(ord as i32));
            let id = sql.bind(SqlValue::Uuid(row.event_id));
            let user = sql.bind(SqlValue::Text(row.user_id.clone()));
            let topic = sql.bind(SqlValue::Text(row.topic.clone()));
            let event = sql.bind(SqlValue::Jsonb(row.event.clone()));
            format!("({ord}::int4, {id}::uuid, {user}::text, {topic}::text, {event}::jsonb)")
        })
        .collect();
    sql.push(&rows.join(", "));
    sql.push(
        ") as v(ord, event_id, user_id, topic, event) \
         where exists (select 1 from written) order by v.ord returning seq)",
    );
    let Some(claim) = claim else {
        return String::new();
    };
    let user = sql.typed(SqlValue::Text(claim.user_id.clone()), "text");
    let holder = sql.typed(SqlValue::Uuid(claim.holder), "uuid");
    let seconds = sql.typed(SqlValue::Int32(claim.lease_seconds), "int4");
    sql.push(&format!(
        ", lease_claim as (insert into outbox_leases as lease (user_id, holder, expires_at) \
         select {user}, {holder}, now() + make_interval(secs => {seconds}) \
         where exists (select 1 from outbox_rows) \
         on conflict (user_id) do update set {TAKE_LEASE} returning holder = {holder} as ours)"
    ));
    format!(
        ", (select ours from lease_claim), \
         (select array_agg(seq order by seq) from outbox_rows), \
         exists (select 1 from outbox where user_id = {user} and {PENDING})"
    )
}

/// The final select of a write whose row is one count: `count(*)` of `written`, then
/// `claimed`, the claim's columns returned by [`push_outbox`].
pub fn select_written_count(mut sql: Builder, claimed: &str) -> Statement {
    sql.push(&format!(" select count(*){claimed} from written"));
    sql.build()
}

/// How a claim updates a lease row that exists: an expired lease, or one `holder` holds
/// already, goes to the claimant with a fresh expiry; a live lease of another holder stays
/// as it is and gets `recheck` set, so that its holder runs another round for the claimant's
/// events (see [`finish_round`]). The holder's own claim keeps `recheck` as others set it.
const TAKE_LEASE: &str = "holder = case when lease.expires_at < now() \
or lease.holder = excluded.holder then excluded.holder else lease.holder end, \
expires_at = case when lease.expires_at < now() \
or lease.holder = excluded.holder then excluded.expires_at else lease.expires_at end, \
recheck = case when lease.holder = excluded.holder then lease.recheck \
else lease.expires_at >= now() end";

/// A write's claim of its user's publishing lease, taken in the write's own statement
/// ([`push_outbox`]) for the events it stores: a write whose user has nothing older pending
/// then publishes its events without a claim statement of its own, one round trip fewer per
/// write. The lease is claimed only if the write stored events.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteClaim {
    pub user_id: String,
    pub holder: Uuid,
    pub lease_seconds: i32,
}

impl WriteClaim {
    /// A claim under a new holder id, for [`LEASE`].
    pub fn new(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            holder: Uuid::now_v7(),
            lease_seconds: lease_seconds(),
        }
    }
}

/// What a write's claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The write holds the lease now; otherwise a live holder was flagged to go round again.
    pub ours: bool,
    /// The sequence numbers of the events the write stored, in order.
    pub seqs: Vec<i64>,
    /// The user had undelivered events before this write (as its snapshot saw them): they go
    /// first, so the publisher reads the queue with [`claim_pending`] as usual.
    pub older: bool,
}

impl Claimed {
    /// The claim's columns after the `leading` ones of a write's row; `None` when the row has
    /// none (the write stored no events or was built without a claim) or the write stored
    /// nothing.
    pub fn decode(row: &[SqlValue], leading: usize) -> Result<Option<Self>, String> {
        if row.len() == leading {
            return Ok(None);
        }
        match row.get(leading..) {
            Some([SqlValue::Null, _, _]) => Ok(None),
            Some(
                [
                    SqlValue::Bool(ours),
                    SqlValue::Int64Array(seqs),
                    SqlValue::Bool(older),
                ],
            ) => Ok(Some(Self {
                ours: *ours,
                seqs: seqs.clone(),
                older: *older,
            })),
            _ => Err(format!("unexpected claim columns in {row:?}")),
        }
    }

    /// The write's own events, ready to publish, if the write may publish them at once: it
    /// holds the lease and nothing older waits before them.
    pub fn own_events(&self, events: &[OutboxRow]) -> Option<Vec<Pending>> {
        if !self.ours || self.older || self.seqs.len() != events.len() {
            return None;
        }
        Some(
            self.seqs
                .iter()
                .zip(events)
                .map(|(seq, row)| Pending {
                    seq: *seq,
                    event_id: row.event_id,
                    topic: row.topic.clone(),
                    event: row.event.clone(),
                })
                .collect(),
        )
    }
}

/// An undelivered event as the publisher reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub event: serde_json::Value,
}

/// What [`claim_pending`] selects, in the order [`decode_claim`] reads it.
const PENDING_COLUMNS: [Column; 4] = [
    Column::new("seq", "int8"),
    Column::new("event_id", "uuid"),
    Column::new("topic", "text"),
    Column::new("event", "jsonb"),
];

impl Pending {
    fn decode(values: &[SqlValue]) -> Result<Self, String> {
        let row = Row::new(&PENDING_COLUMNS, values)?;
        Ok(Self {
            seq: row.int64("seq")?,
            event_id: row.uuid("event_id")?,
            topic: row.text("topic")?,
            event: row.json("event")?.clone(),
        })
    }
}

/// The rows of [`claim_pending`]: `None` when another holder has the lease (no row), else the
/// claimed events, none when the one row is all nulls (claimed, nothing due).
pub fn decode_claim(rows: &[Vec<SqlValue>]) -> Result<Option<Vec<Pending>>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    rows.iter()
        .filter(|row| !matches!(row.first(), Some(SqlValue::Null)))
        .map(|row| Pending::decode(row))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// The rows a publisher still has to send: neither delivered nor parked as dead.
const PENDING: &str = "delivered_at is null and dead_at is null";

/// Claims the publishing lease of `user_id` for `holder` and, in the same round trip, reads up
/// to `limit` of the user's undelivered events in order, if the first of them (the head of the
/// user's queue) is due: only the head is ever backed off, and it holds back those behind it.
///
/// No row: another holder has an unexpired lease; the claim then sets its `recheck`, so that
/// the holder runs another round for what this caller committed (see [`finish_round`]). One
/// row of nulls: claimed, nothing due. Otherwise the events.
///
/// The events are read with the statement's snapshot, taken before the claim: a previous
/// holder that marked events delivered and released the lease in between is only seen through
/// the row lock, whose re-check drops rows delivered since the snapshot. Without
/// `for no key update` those events would be published twice.
pub fn claim_pending(user_id: &str, holder: Uuid, lease_seconds: i32, limit: i64) -> Statement {
    let columns = select_list(&PENDING_COLUMNS);
    Statement::new(
        format!(
            "with claimed as (insert into outbox_leases as lease (user_id, holder, expires_at) \
             values ($1::text, $2::uuid, now() + make_interval(secs => $3::int4)) \
             on conflict (user_id) do update set {TAKE_LEASE} \
             returning holder = $2::uuid as ours) \
             select {columns} from claimed left join lateral \
             (select {columns} from outbox where claimed.ours and user_id = $1::text \
              and {PENDING} \
              and (select next_attempt_at from outbox where user_id = $1::text and {PENDING} \
                   order by seq limit 1) <= now() \
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

/// Records a failed attempt on `seq`, the head of the user's queue, and backs it off: 1 s,
/// 2 s, 4 s, ... capped at 5 minutes. Only the head is backed off; the events behind it wait
/// because the head is not due ([`claim_pending`]), so a new write does not make it due again.
///
/// After `max_attempts` failed attempts the event is parked as dead if the sidecar delivered
/// any event (of any user) since this one first failed: then the fault is the event's, not
/// the sidecar's or the broker's, and it must not hold back the user's later events. While
/// nothing gets through (an outage), nothing is parked. Returns one row, `parked`.
pub fn mark_failed(user_id: &str, seq: i64, error: &str, max_attempts: i32) -> Statement {
    let error: String = error.chars().take(500).collect();
    Statement::new(
        format!(
            "update outbox set attempts = attempts + 1, last_error = $3::text, \
             first_failed_at = coalesce(first_failed_at, now()), \
             next_attempt_at = now() + make_interval(secs => \
             least(300, power(2, least(attempts, 9)))::int4), \
             dead_at = case when attempts + 1 >= $4::int4 and exists \
             (select 1 from outbox delivered where delivered.delivered_at > \
              coalesce(outbox.first_failed_at, now())) then now() end \
             where user_id = $1::text and seq = $2::int8 and {PENDING} \
             returning dead_at is not null as parked"
        ),
        vec![
            SqlValue::Text(user_id.to_owned()),
            SqlValue::Int64(seq),
            SqlValue::Text(error),
            SqlValue::Int32(max_attempts),
        ],
    )
}

/// Users whose queue head is due, oldest head first.
pub fn due_users(limit: i64) -> Statement {
    Statement::new(
        format!(
            "select user_id from (select distinct on (user_id) user_id, seq, next_attempt_at \
             from outbox where {PENDING} order by user_id, seq) heads \
             where next_attempt_at <= now() order by seq limit $1::int8"
        ),
        vec![SqlValue::Int64(limit)],
    )
}

/// Deletes delivered rows older than the retention period. Dead rows stay.
pub fn prune(retention_hours: i32) -> Statement {
    Statement::new(
        "delete from outbox where delivered_at < now() - make_interval(hours => $1::int4)",
        vec![SqlValue::Int32(retention_hours)],
    )
}

/// How many events are parked as dead, for the relay's summary.
pub fn dead_count() -> Statement {
    Statement::new(
        "select count(*) from outbox where dead_at is not null",
        Vec::new(),
    )
}

/// Puts every parked event back in its user's queue, to be published once more at its place
/// in `seq` order (add `and user_id = '...'` or `and event_id = '...'` to pick some). Events
/// of the user published meanwhile are not sent again, so a consumer sees a requeued event
/// after them. Run it with psql once the cause is fixed (README, "Delivery guarantees").
pub const REQUEUE_DEAD: &str = "update outbox set dead_at = null, attempts = 0, \
first_failed_at = null, next_attempt_at = now() where dead_at is not null";

/// How long a publisher may hold a user's lease before another may take over. Each round takes
/// the lease anew, and starts no publish that could outlast it.
pub const LEASE: Duration = Duration::from_secs(30);

/// A publish may take its timeout three times over: to connect, for the first byte of the
/// answer, and between bytes.
pub const TIMEOUT_PHASES: u32 = 3;

/// The longest one publish with a per-phase `timeout` can take.
pub fn publish_limit(timeout: Duration) -> Duration {
    timeout * TIMEOUT_PHASES
}

/// Whether a per-phase publish `timeout` is usable at all: one publish must fit a fresh lease,
/// or no round could ever publish (checked when a publisher is configured).
pub fn timeout_fits_lease(timeout: Duration) -> bool {
    fits_in_lease(Duration::ZERO, publish_limit(timeout), LEASE)
}

/// [`LEASE`] in whole seconds, as [`claim_pending`] takes it.
pub fn lease_seconds() -> i32 {
    i32::try_from(LEASE.as_secs()).unwrap_or(i32::MAX)
}

/// Whether a round read a full batch (`read` events of the `batch` asked for), so more may be
/// waiting ([`RoundEnd::full`]).
pub fn read_full_batch(read: usize, batch: i64) -> bool {
    i64::try_from(read).is_ok_and(|n| n >= batch)
}

/// Whether a flush that found the lease busy reports the user as served by another publisher:
/// only if it delivered and parked nothing itself before that (a later round finding the lease
/// taken still delivered something).
pub fn left_to_other_holder(delivered: usize, parked: usize) -> bool {
    delivered == 0 && parked == 0
}

/// Whether another publish may start `elapsed` into a round whose lease lasts `lease`: only if
/// it ends, even at its full `timeout`, a safety margin before the lease expires and another
/// publisher may take over the user's queue.
pub fn fits_in_lease(elapsed: Duration, timeout: Duration, lease: Duration) -> bool {
    let margin = lease / 10;
    elapsed + timeout + margin <= lease
}

/// Whether the next publish of a round may start: the round's first always may (the
/// configuration check at start-up made sure one publish fits a fresh lease, and refusing it
/// would leave a round that publishes nothing, going round again at once), a later one only
/// if it [fits in the lease](fits_in_lease).
pub fn may_publish(first: bool, elapsed: Duration, timeout: Duration, lease: Duration) -> bool {
    first || fits_in_lease(elapsed, timeout, lease)
}

/// Whether a publisher goes round once more after a round: when a writer left its events to it
/// (`recheck`), when the round read a full batch (more may be waiting), or when the round
/// stopped early to stay inside its lease, unless the round failed (the head backs off) or the
/// publisher has used its time budget (the relay takes over what is left).
pub fn another_round(round: &RoundEnd, within_budget: bool) -> bool {
    !round.failed && within_budget && (round.recheck || round.full || round.cut_short)
}

/// How a publishing round ended, for [`another_round`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundEnd {
    /// Another publisher found the lease busy during the round and left its events to us.
    pub recheck: bool,
    /// The round read as many events as it asked for.
    pub full: bool,
    /// The round stopped before its last event to stay inside the lease.
    pub cut_short: bool,
    /// A publish failed and the head was backed off (not parked).
    pub failed: bool,
}

/// The publish URL, per Dapr's pub/sub API reference. `metadata.partitionKey` is what Dapr's Kafka
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

fn encode_segment(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Media type of a structured-mode CloudEvent body.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u8) -> OutboxRow {
        OutboxRow {
            event_id: Uuid::from_bytes([n; 16]),
            user_id: "alice".into(),
            topic: "tasks".into(),
            event: serde_json::json!({ "n": n }),
        }
    }

    /// A write's statement as `store` builds one: `written`, the outbox, the final select.
    fn write_statement(events: &[OutboxRow], claim: Option<&WriteClaim>) -> (Statement, String) {
        let mut sql = Builder::new("with written as (select 1 as id)");
        let claimed = push_outbox(&mut sql, events, claim);
        (select_written_count(sql, &claimed), claimed)
    }

    #[test]
    fn a_write_claims_the_lease_only_for_events_it_stores() {
        let claim = WriteClaim::new("alice");
        let (plain, columns) = write_statement(&[event(1)], None);
        assert!(
            columns.is_empty() && !plain.sql.contains("outbox_leases"),
            "{}",
            plain.sql
        );

        let (none, columns) = write_statement(&[], Some(&claim));
        assert!(
            columns.is_empty() && !none.sql.contains("outbox"),
            "{}",
            none.sql
        );

        let (claiming, columns) = write_statement(&[event(1), event(2)], Some(&claim));
        let sql = &claiming.sql;
        let (stored, leased) = (
            sql.find("outbox_rows as (insert into outbox")
                .expect("the outbox CTE"),
            sql.find("lease_claim as (insert into outbox_leases")
                .expect("the claim CTE"),
        );
        assert!(stored < leased, "{sql}");
        assert!(
            sql.contains("where exists (select 1 from outbox_rows) on conflict (user_id)"),
            "a write that stored nothing claims nothing: {sql}"
        );
        assert!(sql.contains(TAKE_LEASE), "{sql}");
        assert!(
            sql.ends_with(&format!("select count(*){columns} from written")),
            "{sql}"
        );
        // Two events of five values each, then the claim's user, holder and lease.
        assert_eq!(
            claiming.params[10..],
            [
                SqlValue::Text("alice".into()),
                SqlValue::Uuid(claim.holder),
                SqlValue::Int32(lease_seconds()),
            ]
        );
        assert!(
            claim_pending("alice", claim.holder, 30, 10)
                .sql
                .contains(TAKE_LEASE),
            "both claims take the lease by one rule"
        );
    }

    #[test]
    fn a_claim_is_read_after_the_writes_own_columns() {
        let row = |tail: Vec<SqlValue>| [vec![SqlValue::Int64(1)], tail].concat();
        assert_eq!(Claimed::decode(&row(vec![]), 1), Ok(None), "built without");
        assert_eq!(
            Claimed::decode(
                &row(vec![SqlValue::Null, SqlValue::Null, SqlValue::Bool(false)]),
                1
            ),
            Ok(None),
            "stored nothing, claimed nothing"
        );
        assert_eq!(
            Claimed::decode(
                &row(vec![
                    SqlValue::Bool(true),
                    SqlValue::Int64Array(vec![7, 8]),
                    SqlValue::Bool(false)
                ]),
                1
            ),
            Ok(Some(Claimed {
                ours: true,
                seqs: vec![7, 8],
                older: false
            }))
        );
        assert!(Claimed::decode(&row(vec![SqlValue::Bool(true)]), 1).is_err());
    }

    #[test]
    fn a_write_publishes_its_own_events_only_as_the_head_of_its_queue() {
        let events = [event(1), event(2)];
        let claimed = |ours, older| Claimed {
            ours,
            seqs: vec![7, 8],
            older,
        };
        let own = claimed(true, false).own_events(&events).expect("the head");
        assert_eq!(
            own.iter().map(|p| (p.seq, p.event_id)).collect::<Vec<_>>(),
            [(7, events[0].event_id), (8, events[1].event_id)]
        );
        assert_eq!(own[1].event, events[1].event);
        assert_eq!(claimed(true, true).own_events(&events), None, "older first");
        assert_eq!(
            claimed(false, false).own_events(&events),
            None,
            "lease busy"
        );
        assert_eq!(
            claimed(true, false).own_events(&events[..1]),
            None,
            "mismatch"
        );
    }

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
    fn a_claim_reads_busy_nothing_due_or_the_events() {
        assert_eq!(decode_claim(&[]), Ok(None), "busy: no row");
        let nulls = vec![SqlValue::Null; 4];
        assert_eq!(
            decode_claim(&[nulls]),
            Ok(Some(vec![])),
            "claimed, nothing due"
        );
        let id = Uuid::now_v7();
        let event = serde_json::json!({"type": "task.created"});
        let row = vec![
            SqlValue::Int64(7),
            SqlValue::Uuid(id),
            SqlValue::Text("tasks".into()),
            SqlValue::Jsonb(event.clone()),
        ];
        assert_eq!(
            decode_claim(std::slice::from_ref(&row)),
            Ok(Some(vec![Pending {
                seq: 7,
                event_id: id,
                topic: "tasks".into(),
                event,
            }]))
        );
        let mut bad = row;
        bad[1] = SqlValue::Text("not a uuid".into());
        assert!(decode_claim(&[bad]).is_err());
        let sql = claim_pending("u", Uuid::nil(), 30, 10).sql;
        assert!(
            sql.contains("select seq, event_id, topic, event from claimed"),
            "{sql}"
        );
    }

    #[test]
    fn statements_scope_by_user() {
        for statement in [
            claim_pending("u", Uuid::nil(), 30, 10),
            finish_round("u", Uuid::nil(), &[1, 2]),
            mark_failed("u", 1, "boom", 10),
        ] {
            assert!(statement.sql.contains("user_id = $1"), "{}", statement.sql);
            assert_eq!(statement.params[0], SqlValue::Text("u".into()));
        }
    }

    #[test]
    fn a_publish_starts_only_if_it_ends_inside_the_lease() {
        let lease = Duration::from_secs(30);
        let timeout = Duration::from_secs(5);
        assert!(fits_in_lease(Duration::ZERO, timeout, lease));
        assert!(fits_in_lease(Duration::from_secs(22), timeout, lease));
        assert!(
            !fits_in_lease(Duration::from_secs(23), timeout, lease),
            "3 s margin"
        );
        assert!(
            !fits_in_lease(Duration::ZERO, Duration::from_secs(30), lease),
            "a timeout as long as the lease never fits"
        );
    }

    #[test]
    fn a_round_always_makes_its_first_publish() {
        // 3 x 9 s plus the 3 s margin fill the 30 s lease exactly: the check at start-up
        // accepts it, so a round must still publish once rather than stop before its first
        // event, microseconds in, and go round again with nothing sent.
        let lease = Duration::from_secs(30);
        let timeout = Duration::from_secs(27);
        let just_after = Duration::from_micros(1);
        assert!(fits_in_lease(Duration::ZERO, timeout, lease));
        assert!(!fits_in_lease(just_after, timeout, lease));
        assert!(may_publish(true, just_after, timeout, lease));
        assert!(!may_publish(false, just_after, timeout, lease));
    }

    #[test]
    fn the_publish_timeout_counts_three_times_against_the_lease() {
        assert_eq!(
            publish_limit(Duration::from_secs(2)),
            Duration::from_secs(6)
        );
        assert!(
            timeout_fits_lease(Duration::from_secs(9)),
            "27 s + 3 s margin"
        );
        assert!(!timeout_fits_lease(Duration::from_millis(9_001)));
        assert_eq!(lease_seconds(), 30);
    }

    #[test]
    fn a_full_batch_means_more_may_wait_and_busy_means_nothing_done_here() {
        assert!(read_full_batch(20, 20));
        assert!(!read_full_batch(19, 20));
        assert!(read_full_batch(0, 0), "an empty batch asked for is full");
        assert!(left_to_other_holder(0, 0));
        assert!(!left_to_other_holder(1, 0), "a later round found it busy");
        assert!(!left_to_other_holder(0, 1));
    }

    #[test]
    fn another_round_runs_only_while_something_may_be_waiting() {
        let ended = |recheck, full, cut_short, failed| RoundEnd {
            recheck,
            full,
            cut_short,
            failed,
        };
        assert!(!another_round(&RoundEnd::default(), true), "drained");
        assert!(another_round(&ended(true, false, false, false), true));
        assert!(another_round(&ended(false, true, false, false), true));
        assert!(another_round(&ended(false, false, true, false), true));
        assert!(
            !another_round(&ended(true, true, true, true), true),
            "a failure backs off"
        );
        assert!(
            !another_round(&ended(true, true, false, false), false),
            "the budget is spent: the relay goes on"
        );
    }

    #[test]
    fn only_the_head_is_backed_off_and_parking_needs_proof_the_sidecar_works() {
        let failed = mark_failed("u", 7, &"x".repeat(600), 10);
        assert!(failed.sql.contains("seq = $2::int8"), "{}", failed.sql);
        assert!(
            failed.sql.contains("delivered.delivered_at >"),
            "{}",
            failed.sql
        );
        assert_eq!(failed.params[2], SqlValue::Text("x".repeat(500)));
        assert_eq!(failed.params[3], SqlValue::Int32(10));
        let claim = claim_pending("u", Uuid::nil(), 30, 10);
        assert!(
            claim.sql.contains("order by seq limit 1) <= now()"),
            "due is decided by the head: {}",
            claim.sql
        );
        assert!(!claim.sql.contains("min(next_attempt_at)"));
    }
}
