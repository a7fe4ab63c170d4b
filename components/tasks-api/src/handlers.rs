//! One function per operation: load, run what the core decides (`tasks::write`), retry when a
//! concurrent write got there first, render. A write's events are published before answering
//! (`publish::before_response`).

use crate::request::json_body;
use http::{HeaderValue, StatusCode, header as h};
use spin_sdk::http::Request;
use todo_adapters::auth::Verifier;
use todo_adapters::db::Db;
use todo_adapters::headers::header;
use todo_adapters::publish::{self, Written};
use todo_adapters::reply::{self, Reply};
use todo_adapters::settings;
use todo_core::error::ApiError;
use todo_core::events::Topics;
use todo_core::outbox::{OutboxRow, WriteClaim};
use todo_core::sql::Statement;
use todo_core::tasks::idempotency::{self, IdempotencyKey};
use todo_core::tasks::routes::{self, Action};
use todo_core::tasks::write::{self, Change, Update, WRITE_ATTEMPTS, Write};
use todo_core::tasks::{self, ListQuery, Task, UserId, store, time};
use uuid::Uuid;

struct Ctx {
    user: UserId,
    db: Db,
    /// Where the writes' events go.
    topics: Topics,
    if_match: Option<String>,
    location: String,
}

pub async fn handle(req: Request) -> Result<Reply, ApiError> {
    // First, so that a configuration refused as unsafe answers every request alike.
    let auth = Verifier::load().await?;
    // Only the `/api/:user_id/tasks[/...]` routes carry the user id; the catch-all does not.
    let raw_user = header(req.headers(), "spin-path-match-user-id")
        .ok_or_else(routes::not_found)?
        .to_owned();
    let user = UserId::parse(&raw_user).map_err(|_| routes::not_found())?;
    let collection = format!("/api/{raw_user}/tasks");
    let rest = req
        .uri()
        .path()
        .strip_prefix(&collection)
        .ok_or_else(routes::not_found)?
        .to_owned();
    let action = routes::parse(req.method().as_str(), &rest)?;

    auth.authorize(header(req.headers(), "authorization"), user.as_str())
        .await?;

    let database = settings::Database::load().await?;
    let topics = settings::Events::load()
        .await?
        .topics(header(req.headers(), "traceparent").map(str::to_owned));
    let ctx = Ctx {
        db: Db::open(&database.url).await?,
        topics,
        if_match: header(req.headers(), "if-match").map(str::to_owned),
        location: collection,
        user,
    };
    let query = req.uri().query().unwrap_or("").to_owned();

    let (reply, wrote) = match action {
        Action::List => (list_tasks(&ctx, &query).await?, None),
        Action::Get(id) => (get_task(&ctx, id).await?, None),
        Action::Create => {
            let key = header(req.headers(), idempotency::HEADER)
                .map(IdempotencyKey::parse)
                .transpose()?;
            create_task(&ctx, &json_body(req).await?, key).await?
        }
        Action::Replace(id) => {
            let changes = tasks::parse_replace(&json_body(req).await?)?;
            update_task(&ctx, id, Change::Fields(changes)).await?
        }
        Action::Patch(id) => {
            let changes = tasks::parse_patch(&json_body(req).await?)?;
            update_task(&ctx, id, Change::Fields(changes)).await?
        }
        Action::Complete(id) => {
            let set = tasks::parse_complete(&json_body(req).await?)?;
            update_task(&ctx, id, Change::Complete(set)).await?
        }
        Action::Delete(id) => delete_task(&ctx, id).await?,
    };
    if let Some(Wrote(written)) = wrote {
        publish::before_response(ctx.db, ctx.user.as_str().to_owned(), written).await;
    }
    Ok(reply)
}

/// A write that took effect, with what its statement claimed for publishing its events.
struct Wrote(Option<Written>);

/// Runs a write built with `claim` (`publish::claim_for_write`) that stores `events`; `None`
/// when it touched nothing (the task changed since it was read, or the key was taken).
async fn run_write(
    ctx: &Ctx,
    statement: Statement,
    claim: Option<WriteClaim>,
    events: &[OutboxRow],
) -> Result<Option<Wrote>, ApiError> {
    let (count, claimed) = ctx.db.write(statement).await?;
    Ok((count == 1).then(|| Wrote(Written::of(claim, claimed, events))))
}

async fn list_tasks(ctx: &Ctx, query: &str) -> Result<Reply, ApiError> {
    let query = ListQuery::parse(query)?;
    let tasks = ctx.db.tasks(query.statement(ctx.user.as_str())).await?;
    Ok(reply::json(StatusCode::OK, &query.page(tasks)))
}

async fn load(ctx: &Ctx, id: Uuid) -> Result<Task, ApiError> {
    ctx.db
        .tasks(store::get(ctx.user.as_str(), id))
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("no task has the id '{id}'")))
}

async fn get_task(ctx: &Ctx, id: Uuid) -> Result<Reply, ApiError> {
    let task = load(ctx, id).await?;
    Ok(with_etag(reply::json(StatusCode::OK, &task), &task))
}

/// Inserts a task. Under an `Idempotency-Key` the insert claims the key in the same statement,
/// and a key already used answers with the first answer (`tasks::idempotency`). Returns the
/// reply and what was written.
async fn create_task(
    ctx: &Ctx,
    body: &[u8],
    key: Option<IdempotencyKey>,
) -> Result<(Reply, Option<Wrote>), ApiError> {
    let changes = tasks::parse_create(body)?;
    let new = write::create(Uuid::now_v7(), &ctx.user, changes, time::now(), &ctx.topics);
    let task = &new.task;
    let answer = serde_json::to_string(task)
        .map_err(|e| ApiError::internal(format!("serializing a task: {e}")))?;
    let etag = task.etag();
    let claim = publish::claim_for_write(ctx.user.as_str());
    let Some(key) = key else {
        let statement = new.statement(claim.as_ref());
        let wrote = run_write(ctx, statement, claim, &new.events).await?;
        return Ok((
            created(ctx, StatusCode::CREATED, task.id, &etag, answer),
            wrote,
        ));
    };
    let fingerprint = idempotency::fingerprint(body)?;
    let answer_once = idempotency::Answer {
        key: &key,
        fingerprint: &fingerprint,
        status: StatusCode::CREATED.as_u16(),
        etag: &etag,
        body: &answer,
    };
    let statement = new.statement_once(&answer_once, claim.as_ref());
    if let Some(wrote) = run_write(ctx, statement, claim, &new.events).await? {
        return Ok((
            created(ctx, StatusCode::CREATED, task.id, &etag, answer),
            Some(wrote),
        ));
    }
    let stored = ctx
        .db
        .json(idempotency::lookup(ctx.user.as_str(), &key))
        .await?;
    let first = idempotency::replay(stored, &fingerprint)?;
    let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::CREATED);
    let mut response = created(ctx, status, first.task_id, &first.etag, first.body);
    response
        .headers_mut()
        .insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    Ok((response, None))
}

/// The answer to a create: the task's JSON, its ETag and its Location.
fn created(ctx: &Ctx, status: StatusCode, id: Uuid, etag: &str, body: String) -> Reply {
    let mut response = etagged(
        reply::with_body(status, "application/json", body.into_bytes()),
        etag,
    );
    if let Ok(location) = HeaderValue::from_str(&format!("{}/{id}", ctx.location)) {
        response.headers_mut().insert(h::LOCATION, location);
    }
    response
}

/// Load, apply, write-if-unchanged; retried when a concurrent write (or a reminder firing) got
/// there first. Returns the reply and what was written.
async fn update_task(
    ctx: &Ctx,
    id: Uuid,
    change: Change,
) -> Result<(Reply, Option<Wrote>), ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let current = load(ctx, id).await?;
        let if_match = ctx.if_match.as_deref();
        let claim = publish::claim_for_write(ctx.user.as_str());
        let now = time::now();
        match write::update(
            &current,
            if_match,
            &change,
            now,
            &ctx.topics,
            claim.as_ref(),
        )? {
            Update::Unchanged => {
                let reply = with_etag(reply::json(StatusCode::OK, &current), &current);
                return Ok((reply, None));
            }
            Update::Write(write) => {
                let Write {
                    task,
                    events,
                    statement,
                } = *write;
                if let Some(wrote) = run_write(ctx, statement, claim, &events).await? {
                    let reply = with_etag(reply::json(StatusCode::OK, &task), &task);
                    return Ok((reply, Some(wrote)));
                }
            }
        }
    }
    Err(write::conflict())
}

async fn delete_task(ctx: &Ctx, id: Uuid) -> Result<(Reply, Option<Wrote>), ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let current = load(ctx, id).await?;
        let claim = publish::claim_for_write(ctx.user.as_str());
        let if_match = ctx.if_match.as_deref();
        let delete = write::delete(&current, if_match, time::now(), &ctx.topics, claim.as_ref())?;
        if let Some(wrote) = run_write(ctx, delete.statement, claim, &delete.events).await? {
            return Ok((reply::empty(StatusCode::NO_CONTENT), Some(wrote)));
        }
    }
    Err(write::conflict())
}

fn with_etag(response: Reply, task: &Task) -> Reply {
    etagged(response, &task.etag())
}

fn etagged(mut response: Reply, etag: &str) -> Reply {
    if let Ok(etag) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(h::ETAG, etag);
    }
    response
}
