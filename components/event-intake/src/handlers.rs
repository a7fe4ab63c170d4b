//! From a delivery to Dapr's answer: check the caller, read the event, act on it once.

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use spin_sdk::http::Request;
use todo_adapters::db::Db;
use todo_adapters::headers;
use todo_adapters::publish::{self, Written};
use todo_adapters::reply::{self, Reply};
use todo_adapters::settings;
use todo_adapters::sidecar;
use todo_core::error::ApiError;
use todo_core::intake::{self, Ack, Delivery, Guard, MAX_DELIVERY_BYTES, Recorded, Topic, Work};
use todo_core::outbox::Claimed;
use todo_core::subscriptions::{REMINDERS_ROUTE, TASKS_ROUTE};
use todo_core::tasks::{store, time};
use uuid::Uuid;

pub async fn handle(req: Request) -> Result<Reply, ApiError> {
    sidecar::admit(&req).await?;
    let topic = route(req.method(), req.uri().path())?;
    let path = req.uri().path().to_owned();
    let content_type =
        headers::header(req.headers(), header::CONTENT_TYPE.as_str()).map(str::to_owned);

    let body = match read_body(req).await {
        Ok(body) => body,
        Err(ack) => return Ok(answer(ack)),
    };
    let delivery = match intake::parse(topic, content_type.as_deref(), &body) {
        Ok(delivery) => delivery,
        Err(why) => {
            eprintln!("{path}: dropping the delivery: {why}");
            return Ok(answer(Ack::Drop));
        }
    };
    match act(&delivery).await {
        Ok(()) => Ok(answer(Ack::Success)),
        Err(error) => {
            let ack = Ack::for_error(&error);
            eprintln!(
                "{path}: event {} from {} ({}): {error}; answering {}",
                delivery.key.id,
                delivery.key.source,
                delivery.kind,
                ack.as_str()
            );
            Ok(answer(ack))
        }
    }
}

/// The topic a delivery path belongs to (spin.toml routes `/api/events/...` here).
fn route(method: &Method, path: &str) -> Result<Topic, ApiError> {
    let topic = match path {
        TASKS_ROUTE => Topic::Tasks,
        REMINDERS_ROUTE => Topic::Reminders,
        _ => {
            return Err(ApiError::not_found(format!(
                "events are delivered to {TASKS_ROUTE} and {REMINDERS_ROUTE}"
            )));
        }
    };
    if method != Method::POST {
        return Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow: &["POST"],
        });
    }
    Ok(topic)
}

/// The body, at most `MAX_DELIVERY_BYTES`. A larger one can never be handled (`DROP`); one
/// that could not be read may arrive whole next time (`RETRY`).
async fn read_body(req: Request) -> Result<Bytes, Ack> {
    match Limited::new(req.into_body(), MAX_DELIVERY_BYTES)
        .collect()
        .await
    {
        Ok(body) => Ok(body.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            eprintln!("dropping a delivery larger than {MAX_DELIVERY_BYTES} bytes");
            Err(Ack::Drop)
        }
        Err(error) => {
            eprintln!("reading a delivery failed: {error}");
            Err(Ack::Retry)
        }
    }
}

/// How often the intake reads the completed task when the event's copy was not the stored
/// row, or the row changed between read and write.
const READ_ATTEMPTS: usize = 3;

/// Carries out what the delivery causes. Only a completion of a recurring task touches the
/// database: the stored task, not the event, decides whether a next occurrence follows. The
/// first attempt writes from the event's copy, guarded by every column of the stored row; a
/// copy that is not the stored row (forged, altered, stale), or one that says nothing follows,
/// leaves the decision to the stored row, read.
async fn act(delivery: &Delivery) -> Result<(), ApiError> {
    let copy = match intake::plan(delivery) {
        Work::CheckTask(copy) => copy,
        Work::Acknowledge(_) | Work::CreateNext(_) => return Ok(()),
    };
    let topics = settings::Events::load()
        .await?
        .topics(delivery.traceparent.clone());
    let database = settings::Database::load().await?;
    let db = Db::open(&database.url).await?;
    let (user_id, task_id) = (copy.user_id.clone(), copy.id);
    let mut attempt = Some(*copy);
    for _ in 0..=READ_ATTEMPTS {
        let now = time::now();
        let (candidate, guard) = match attempt.take() {
            Some(copy) => (Some(copy), Guard::Copy),
            None => (
                db.tasks(store::get(&user_id, task_id)).await?.pop(),
                Guard::Version,
            ),
        };
        let work = intake::next_occurrence(candidate.as_ref(), Uuid::now_v7(), now);
        let (source, next) = match (candidate, work) {
            (Some(source), Work::CreateNext(next)) => (source, next),
            (_, _) if guard == Guard::Copy => continue,
            (_, other) => {
                nothing_to_do(delivery, other);
                return Ok(());
            }
        };
        // The new occurrence's events are a create's: its reminder, carried over from the
        // completed task, is scheduled in the same statement that creates it.
        let rows = topics.created(&next, now);
        let claim = publish::claim_for_write(&next.user_id);
        let statement = intake::record_next_occurrence(
            &delivery.key,
            &source,
            guard,
            &next,
            &rows,
            claim.as_ref(),
        );
        let written = db.rows(statement).await?;
        let row = written.first().map(Vec::as_slice).unwrap_or_default();
        let recorded = Recorded::decode(row).map_err(ApiError::internal)?;
        let claimed = Claimed::decode(row, Recorded::COLUMNS).map_err(ApiError::internal)?;
        let written = Written::of(claim, claimed, &rows);
        match recorded {
            Recorded::SourceChanged => continue,
            Recorded::Created => {
                publish::before_response(db, next.user_id.clone(), written).await;
            }
            Recorded::OccurrenceExists => println!(
                "occurrence {} of series {} exists already; event {} changed nothing",
                next.occurrence, next.series_id, delivery.key.id
            ),
            Recorded::HandledBefore => {}
        }
        return Ok(());
    }
    Err(ApiError::Conflict {
        detail: format!("task {task_id} kept changing while its completion was handled"),
    })
}

/// Logs why a completion created nothing; the delivery is acknowledged.
fn nothing_to_do(delivery: &Delivery, work: Work) {
    if let Work::Acknowledge(reason) = work {
        println!("event {}: nothing written, {reason}", delivery.key.id);
    }
}

/// Dapr's answer: a 2xx with an empty body means SUCCESS, a 200 with `{"status": ...}` says RETRY
/// or DROP (Dapr's pub/sub API reference, "Expected HTTP response"). SUCCESS is answered without a
/// body, as 204: the sidecar waits for this answer before it delivers the partition's next event,
/// and on Spin 4.0.2 only a response without a body is never held back by the server's Nagle
/// algorithm (see `todo_adapters::reply`).
fn answer(ack: Ack) -> Reply {
    match ack.body() {
        None => reply::empty(StatusCode::NO_CONTENT),
        Some(body) => reply::with_body(StatusCode::OK, "application/json", body),
    }
}
