//! `GET /api/{user_id}/tasks`: filters, sorting and keyset pagination.
//!
//! Every sort is `(key, id)` so the order is total and stable; the cursor carries the last
//! row's key and id, and the next page starts strictly after it. Each sort key has an index
//! on `(user_id, key, id)` (migrations/0001), so a page costs the same at any depth.
//!
//! The key in the cursor must be the very value the database sorts on. For times and ranks
//! the row's own value is. The title sort is on PostgreSQL's `lower(title)`, whose case rules
//! are the database's (its locale) and not Rust's `to_lowercase` (they differ on final sigma,
//! dotted capital I and more; with a mismatch a page can start before the row it continues
//! from, and repeat it forever). So the title cursor carries the title itself, and the
//! database lowers it with the same `lower()` it sorts by.

use crate::error::ApiError;
use crate::sql::{Builder, SqlValue, Statement};
use crate::tasks::model::{Priority, Task, parse_title, tag_keys};
use crate::tasks::store::TASK_COLUMNS;
use crate::tasks::time::parse_utc;
use crate::validation::{Errors, FieldError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
pub const Q_MAX: usize = 200;

/// Tasks without a due date sort after every dated task (ascending), as this far-future
/// instant. It must match the expression index in migrations/0001.
const NO_DUE_SORT_KEY: &str = "9999-12-31T00:00:00Z";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    CreatedAt,
    DueAt,
    Priority,
    Title,
}

impl SortKey {
    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "created_at" => Some(Self::CreatedAt),
            "due_at" => Some(Self::DueAt),
            "priority" => Some(Self::Priority),
            "title" => Some(Self::Title),
            _ => None,
        }
    }

    /// The SQL expression sorted on; identical to the indexed expression.
    fn expression(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::DueAt => "coalesce(due_at, '9999-12-31 00:00:00+00'::timestamptz)",
            Self::Priority => "priority",
            Self::Title => "lower(title)",
        }
    }

    /// What the cursor keeps of a task: the value [`SortKey::expression`] gives for it, or
    /// for the title, the title that `lower()` turns into that value (see the module docs).
    fn key_of(self, task: &Task) -> CursorKey {
        match self {
            Self::CreatedAt => CursorKey::Time(task.created_at),
            Self::DueAt => CursorKey::Time(task.due_at.unwrap_or_else(no_due_sort_key)),
            Self::Priority => CursorKey::Rank(task.priority.rank()),
            Self::Title => CursorKey::Text(task.title.clone()),
        }
    }
}

fn no_due_sort_key() -> DateTime<Utc> {
    NO_DUE_SORT_KEY.parse().unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Completed,
    All,
}

/// Tagged, so a title that looks like a date stays a title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CursorKey {
    Rank(i16),
    Time(DateTime<Utc>),
    /// A title as stored, not lowered.
    Text(String),
}

/// What a cursor encodes: where the previous page ended, under which sort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    #[serde(rename = "s")]
    sort: SortKey,
    #[serde(rename = "d")]
    descending: bool,
    #[serde(rename = "k")]
    key: CursorKey,
    #[serde(rename = "i")]
    id: Uuid,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim_end_matches('=')).ok()?;
        let cursor: Cursor = serde_json::from_slice(&bytes).ok()?;
        // The key must be of the sort's type, or the comparison would not type-check; a title
        // must be one that could be stored (no NUL, which PostgreSQL's text cannot hold).
        let fits = match (cursor.sort, &cursor.key) {
            (SortKey::CreatedAt | SortKey::DueAt, CursorKey::Time(_))
            | (SortKey::Priority, CursorKey::Rank(_)) => true,
            (SortKey::Title, CursorKey::Text(title)) => {
                parse_title(title).is_ok_and(|stored| stored == *title)
            }
            _ => false,
        };
        fits.then_some(cursor)
    }
}

/// A validated list request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub q: Option<String>,
    pub status: Status,
    pub priorities: Vec<Priority>,
    pub tags: Vec<String>,
    pub due_before: Option<DateTime<Utc>>,
    pub due_after: Option<DateTime<Utc>>,
    pub sort: SortKey,
    pub descending: bool,
    pub limit: u32,
    cursor: Option<Cursor>,
}

/// One page of tasks.
#[derive(Debug, Serialize)]
pub struct Page {
    pub items: Vec<Task>,
    pub next_cursor: Option<String>,
}

impl ListQuery {
    /// Parses a raw query string (`a=1&b=2`, percent-encoded). Unknown parameters are
    /// rejected so that a typo does not silently return everything.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut errors = Errors::default();
        let mut seen: Vec<String> = Vec::new();
        let mut list = ListQuery {
            q: None,
            status: Status::All,
            priorities: Vec::new(),
            tags: Vec::new(),
            due_before: None,
            due_after: None,
            sort: SortKey::CreatedAt,
            descending: false,
            limit: DEFAULT_LIMIT,
            cursor: None,
        };
        let mut cursor_raw = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let name = name.into_owned();
            let value = value.into_owned();
            if seen.contains(&name) {
                errors.push(FieldError::new(name, "is given more than once"));
                continue;
            }
            seen.push(name.clone());
            match name.as_str() {
                "q" => {
                    let q = value.trim();
                    if q.chars().count() > Q_MAX {
                        errors.push(FieldError::new(
                            "q",
                            format!("must be at most {Q_MAX} characters"),
                        ));
                    } else if q.chars().any(char::is_control) {
                        errors.push(FieldError::new("q", "must not contain control characters"));
                    } else if !q.is_empty() {
                        list.q = Some(q.to_owned());
                    }
                }
                "status" => match value.as_str() {
                    "pending" => list.status = Status::Pending,
                    "completed" => list.status = Status::Completed,
                    "all" => list.status = Status::All,
                    _ => errors.push(FieldError::new(
                        "status",
                        "must be one of pending, completed, all",
                    )),
                },
                "priority" => {
                    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
                        match Priority::parse(part) {
                            Some(p) if !list.priorities.contains(&p) => list.priorities.push(p),
                            Some(_) => {}
                            None => errors.push(FieldError::new(
                                "priority",
                                format!("'{}' is not one of {}", part.trim(), Priority::NAMES),
                            )),
                        }
                    }
                }
                "tags" => match crate::tasks::model::parse_tags(value.split(',')) {
                    Ok(tags) => list.tags = tag_keys(&tags),
                    Err(e) => errors.push(e),
                },
                "due_before" | "due_after" => match parse_utc(&value) {
                    Ok(t) if name == "due_before" => list.due_before = Some(t),
                    Ok(t) => list.due_after = Some(t),
                    Err(m) => errors.push(FieldError::new(name, m)),
                },
                "sort" => {
                    let (descending, key) = match value.strip_prefix('-') {
                        Some(key) => (true, key),
                        None => (false, value.as_str()),
                    };
                    match SortKey::parse(key) {
                        Some(sort) => {
                            list.sort = sort;
                            list.descending = descending;
                        }
                        None => errors.push(FieldError::new(
                            "sort",
                            "must be created_at, due_at, priority or title, optionally prefixed with -",
                        )),
                    }
                }
                "limit" => match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => list.limit = n,
                    _ => errors.push(FieldError::new(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    )),
                },
                "cursor" => cursor_raw = Some(value),
                _ => errors.push(FieldError::new(name, "is not a known query parameter")),
            }
        }
        if let (Some(before), Some(after)) = (list.due_before, list.due_after)
            && before <= after
        {
            errors.push(FieldError::new(
                "due_before",
                "must be later than due_after",
            ));
        }
        if !errors.is_empty() {
            return Err(errors.into_vec().into());
        }
        if let Some(raw) = cursor_raw {
            let cursor = Cursor::decode(&raw).ok_or_else(|| {
                ApiError::bad_request("cursor is not one this API issued; start without it")
            })?;
            if cursor.sort != list.sort || cursor.descending != list.descending {
                return Err(ApiError::bad_request(
                    "cursor belongs to another sort order; repeat the sort it was issued with",
                ));
            }
            list.cursor = Some(cursor);
        }
        Ok(list)
    }

    /// The page query, scoped to `user_id`. It fetches one row more than the limit to learn
    /// whether another page follows.
    pub fn statement(&self, user_id: &str) -> Statement {
        let mut sql = Builder::new("");
        sql.push("select ");
        sql.push(&TASK_COLUMNS);
        sql.push(" from tasks where user_id = ");
        let user = sql.bind(SqlValue::Text(user_id.to_owned()));
        sql.push(&user);
        match self.status {
            Status::Pending => {
                sql.push(" and not completed");
            }
            Status::Completed => {
                sql.push(" and completed");
            }
            Status::All => {}
        }
        if !self.priorities.is_empty() {
            let ranks = self
                .priorities
                .iter()
                .map(|p| i32::from(p.rank()))
                .collect();
            let p = sql.bind(SqlValue::Int32Array(ranks));
            sql.push(&format!(" and priority = any({p}::int4[])"));
        }
        if !self.tags.is_empty() {
            let p = sql.bind(SqlValue::TextArray(self.tags.clone()));
            sql.push(&format!(" and tag_keys && {p}::text[]"));
        }
        if let Some(before) = self.due_before {
            let p = sql.typed(SqlValue::Timestamp(before), "timestamptz");
            sql.push(&format!(" and due_at < {p}"));
        }
        if let Some(after) = self.due_after {
            let p = sql.typed(SqlValue::Timestamp(after), "timestamptz");
            sql.push(&format!(" and due_at > {p}"));
        }
        if let Some(q) = &self.q {
            // The pattern is a bound value; LIKE wildcards in it are escaped so they match
            // literally. Same expression as the trigram index.
            let p = sql.bind(SqlValue::Text(format!("%{}%", escape_like(q))));
            sql.push(&format!(
                " and (title || ' ' || coalesce(description, '')) ilike {p} escape '\\'"
            ));
        }
        let expr = self.sort.expression();
        let (cmp, dir) = if self.descending {
            ("<", " desc")
        } else {
            (">", "")
        };
        if let Some(cursor) = &self.cursor {
            let key = match &cursor.key {
                CursorKey::Rank(r) => sql.typed(SqlValue::Int16(*r), "int2"),
                CursorKey::Time(t) => sql.typed(SqlValue::Timestamp(*t), "timestamptz"),
                // Lowered by the database, exactly as the rows it is compared with.
                CursorKey::Text(title) => {
                    let p = sql.typed(SqlValue::Text(title.clone()), "text");
                    format!("lower({p})")
                }
            };
            let id = sql.typed(SqlValue::Uuid(cursor.id), "uuid");
            sql.push(&format!(" and ({expr}, id) {cmp} ({key}, {id})"));
        }
        let limit = sql.bind(SqlValue::Int64(i64::from(self.limit) + 1));
        sql.push(&format!(" order by {expr}{dir}, id{dir} limit {limit}"));
        sql.build()
    }

    /// Cuts the extra row off and turns it into the next cursor.
    pub fn page(&self, mut tasks: Vec<Task>) -> Page {
        let limit = self.limit as usize;
        let next_cursor = if tasks.len() > limit {
            tasks.truncate(limit);
            tasks.last().map(|last| {
                Cursor {
                    sort: self.sort,
                    descending: self.descending,
                    key: self.sort.key_of(last),
                    id: last.id,
                }
                .encode()
            })
        } else {
            None
        };
        Page {
            items: tasks,
            next_cursor,
        }
    }
}

fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(query: &str) -> u16 {
        ListQuery::parse(query)
            .map(|_| 200)
            .unwrap_or_else(|e| e.status())
    }

    #[test]
    fn defaults() {
        let q = ListQuery::parse("").expect("valid");
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert_eq!(q.sort, SortKey::CreatedAt);
        assert_eq!(q.status, Status::All);
    }

    #[test]
    fn invalid_parameters_are_422_and_bad_cursors_400() {
        let cases = [
            ("limit=0", 422),
            ("limit=201", 422),
            ("limit=ten", 422),
            ("status=done", 422),
            ("priority=low,urgent", 422),
            ("sort=-colour", 422),
            ("due_before=yesterday", 422),
            (
                "due_before=2026-01-01T00:00:00Z&due_after=2026-02-01T00:00:00Z",
                422,
            ),
            ("colour=red", 422),
            ("limit=5&limit=6", 422),
            ("cursor=not-a-cursor", 400),
            ("q=%00", 422),
            (
                "limit=200&sort=-priority&priority=high,low&tags=a,b&q=x",
                200,
            ),
        ];
        for (query, status) in cases {
            assert_eq!(status_of(query), status, "{query}");
        }
    }

    #[test]
    fn the_statement_binds_every_value() {
        let q = ListQuery::parse("q=50%25_off&tags=Work&priority=high&sort=-due_at&limit=10")
            .expect("valid");
        let statement = q.statement("alice");
        assert!(!statement.sql.contains("alice"));
        assert!(!statement.sql.contains("off"));
        assert_eq!(statement.params[0], SqlValue::Text("alice".into()));
        assert!(
            statement
                .params
                .contains(&SqlValue::Text("%50\\%\\_off%".into()))
        );
        assert!(
            statement
                .params
                .contains(&SqlValue::TextArray(vec!["work".into()]))
        );
        assert!(
            statement.sql.ends_with("desc, id desc limit $5"),
            "{}",
            statement.sql
        );
        assert_eq!(statement.params.last(), Some(&SqlValue::Int64(11)));
    }

    fn titled(title: &str) -> Task {
        let changes = crate::tasks::TaskChanges {
            title: Some(title.into()),
            ..crate::tasks::TaskChanges::default()
        };
        let user = crate::tasks::UserId::parse("alice").expect("valid");
        Task::create(Uuid::now_v7(), &user, changes, DateTime::UNIX_EPOCH)
    }

    #[test]
    fn the_title_cursor_is_lowered_by_the_database_as_the_rows_are() {
        for sort in ["title", "-title"] {
            let first = ListQuery::parse(&format!("sort={sort}&limit=1")).expect("valid");
            let last = titled("ΤΕΛΟΣ");
            let page = first.page(vec![last.clone(), titled("ΩΡΑ")]);
            let cursor = page.next_cursor.expect("another page");
            assert_eq!(
                Cursor::decode(&cursor).map(|c| c.key),
                Some(CursorKey::Text("ΤΕΛΟΣ".into())),
                "the title as stored, not Rust's lower case of it"
            );

            let next =
                ListQuery::parse(&format!("sort={sort}&limit=1&cursor={cursor}")).expect("valid");
            let statement = next.statement("alice");
            let cmp = if sort == "title" { ">" } else { "<" };
            assert!(
                statement.sql.contains(&format!(
                    " and (lower(title), id) {cmp} (lower($2::text), $3::uuid) order by lower(title)"
                )),
                "{}",
                statement.sql
            );
            assert_eq!(statement.params[1], SqlValue::Text("ΤΕΛΟΣ".into()));
            assert_eq!(statement.params[2], SqlValue::Uuid(last.id));
        }
    }

    #[test]
    fn a_title_cursor_holds_a_title_that_could_be_stored() {
        let cursor = |key: &str| {
            Cursor {
                sort: SortKey::Title,
                descending: false,
                key: CursorKey::Text(key.into()),
                id: Uuid::nil(),
            }
            .encode()
        };
        for good in ["apple", "ΤΕΛΟΣ", "İstanbul", &"é".repeat(200)] {
            assert_eq!(
                status_of(&format!("sort=title&cursor={}", cursor(good))),
                200
            );
        }
        for bad in ["", " ", "a\u{0}b", "a\nb", " padded ", &"x".repeat(201)] {
            assert_eq!(
                status_of(&format!("sort=title&cursor={}", cursor(bad))),
                400,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_cursor_only_continues_its_own_sort() {
        let cursor = Cursor {
            sort: SortKey::Priority,
            descending: true,
            key: CursorKey::Rank(3),
            id: Uuid::nil(),
        }
        .encode();
        assert!(ListQuery::parse(&format!("sort=-priority&cursor={cursor}")).is_ok());
        assert_eq!(status_of(&format!("sort=priority&cursor={cursor}")), 400);
        assert_eq!(status_of(&format!("cursor={cursor}")), 400);
    }
}
