//! `spin:postgres/postgres@4.2.0` over tokio-postgres, behaving like Spin 4's outbound-pg host
//! (spinframework/spin `crates/factor-outbound-pg`: `host.rs`, `client.rs`, `allowed_hosts.rs`).
//!
//! - One deadpool pool per connection string (at most 64 connections each, connections cleaned
//!   with `RecyclingMethod::Clean` when they come back; 16 pools kept, least recently used
//!   dropped first). A connection the server closed is discarded on recycle, so the pool recovers
//!   by itself once the server is back.
//! - Every host of the connection string (URL or `key=value` form) must be allowed as
//!   `postgres://host:port` by the component's `allowed_outbound_hosts`; Unix sockets are refused.
//! - Errors: unreachable server or refused address -> `connection-failed`; errors Postgres reports
//!   -> `query-failed(db-error{..})` with the SQLSTATE code; other driver errors -> `query-failed(text)`;
//!   unconvertible parameters -> `bad-parameter` (query) or `value-conversion-failed` (execute).
//! - TLS is not available here: connections are made without it (`sslmode=require` fails) and
//!   `set-ca-root` returns an error.

#![allow(
    clippy::result_large_err,
    reason = "the WIT error carries Postgres' structured error fields, as Spin's does"
)]

mod convert;

use crate::allowed_hosts::AllowedHosts;
use crate::bindings::spin::postgres::postgres::{
    self as pg, Column, DbError, DbValue, Error, ParameterValue, QueryError, RowSet,
};
use crate::host::HostState;
use anyhow::Context as _;
use futures::TryStreamExt as _;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use wasmtime::StoreContextMut;
use wasmtime::component::{
    Accessor, Destination, FutureReader, HasSelf, Resource, StreamProducer, StreamReader,
    StreamResult,
};

/// Connections per pool, as Spin's `CONNECTION_POOL_SIZE`.
const POOL_SIZE: usize = 64;
/// Pools kept, as Spin's `CONNECTION_POOL_CACHE_CAPACITY`.
const POOL_CACHE_CAPACITY: usize = 16;
/// Largest result Spin buffers for one query or row (`MAX_HOST_BUFFERED_BYTES`).
const MAX_RESULT_BYTES: usize = 128 << 20;

type Row = Vec<DbValue>;
type PgResult<T> = wasmtime::Result<Result<T, Error>>;

/// The pools of one app, keyed by connection string.
#[derive(Default)]
pub struct Pools {
    /// Most recently used last.
    pools: Mutex<Vec<(String, deadpool_postgres::Pool)>>,
}

impl Pools {
    fn pool(&self, address: &str) -> anyhow::Result<deadpool_postgres::Pool> {
        let mut pools = self
            .pools
            .lock()
            .map_err(|_| anyhow::anyhow!("postgres pool table poisoned"))?;
        if let Some(i) = pools.iter().position(|(a, _)| a == address) {
            let entry = pools.remove(i);
            let pool = entry.1.clone();
            pools.push(entry);
            return Ok(pool);
        }
        let pool = create_pool(address).context("establishing PostgreSQL connection pool")?;
        if pools.len() >= POOL_CACHE_CAPACITY {
            pools.remove(0);
        }
        pools.push((address.to_string(), pool.clone()));
        Ok(pool)
    }

    async fn client(&self, address: &str) -> Result<Arc<deadpool_postgres::Object>, Error> {
        let pool = self
            .pool(address)
            .map_err(|e| Error::ConnectionFailed(format!("{e:?}")))?;
        let client = pool
            .get()
            .await
            .map_err(|e| Error::ConnectionFailed(format!("{e:?}")))?;
        Ok(Arc::new(client))
    }
}

fn create_pool(address: &str) -> anyhow::Result<deadpool_postgres::Pool> {
    let config = address
        .parse::<tokio_postgres::Config>()
        .context("parsing Postgres connection string")?;
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Clean,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(POOL_SIZE)
        .build()
        .context("building Postgres connection pool")
}

/// What a component's store needs for `spin:postgres`.
#[derive(Clone)]
pub struct PgContext {
    pools: Arc<Pools>,
    allowed_hosts: Arc<AllowedHosts>,
}

impl PgContext {
    /// A context drawing from `pools` and limited by `allowed_hosts`.
    pub fn new(pools: Arc<Pools>, allowed_hosts: Arc<AllowedHosts>) -> Self {
        Self {
            pools,
            allowed_hosts,
        }
    }

    /// Checks each host of the connection string as Spin's `AllowedHostChecker` does.
    fn ensure_address_allowed(&self, address: &str) -> Result<(), Error> {
        let config = address
            .parse::<tokio_postgres::Config>()
            .map_err(|e| Error::ConnectionFailed(e.to_string()))?;
        let ports = config.get_ports();
        for (i, host) in config.get_hosts().iter().enumerate() {
            match host {
                tokio_postgres::config::Host::Tcp(host) => {
                    // The port at the same index, or the only port when there is one.
                    let port = ports.get(i).or_else(|| {
                        if ports.len() == 1 {
                            ports.first()
                        } else {
                            None
                        }
                    });
                    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                    let url = format!("{host}{port}");
                    if !self.allowed_hosts.allows_url(&url, "postgres") {
                        return Err(Error::ConnectionFailed(format!(
                            "address postgres://{url} is not permitted"
                        )));
                    }
                }
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(_) => {
                    return Err(Error::ConnectionFailed(
                        "Unix sockets are not supported on WebAssembly".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn open(&self, address: &str) -> Result<PgConnection, Error> {
        self.ensure_address_allowed(address)?;
        Ok(PgConnection {
            client: self.pools.client(address).await?,
        })
    }
}

/// The host side of a `connection` resource: a pooled client, returned to its pool on drop.
pub struct PgConnection {
    client: Arc<deadpool_postgres::Object>,
}

/// The host side of a `connection-builder` resource.
pub struct PgConnectionBuilder {
    address: String,
}

fn db_error(e: tokio_postgres::Error) -> Error {
    let as_text = format!("{e:?}");
    let Some(db) = e.as_db_error() else {
        return Error::QueryFailed(QueryError::Text(as_text));
    };
    let mut extras = Vec::new();
    let mut extra = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            extras.push((name.to_string(), value));
        }
    };
    extra("column", db.column().map(str::to_string));
    extra("constraint", db.constraint().map(str::to_string));
    extra("routine", db.routine().map(str::to_string));
    extra("hint", db.hint().map(str::to_string));
    extra("table", db.table().map(str::to_string));
    extra("datatype", db.datatype().map(str::to_string));
    extra("schema", db.schema().map(str::to_string));
    extra("file", db.file().map(str::to_string));
    extra("line", db.line().map(|l| l.to_string()));
    extra("where_", db.where_().map(str::to_string));
    Error::QueryFailed(QueryError::DbError(DbError {
        as_text,
        severity: db.severity().to_string(),
        code: db.code().code().to_string(),
        message: db.message().to_string(),
        detail: db.detail().map(str::to_string),
        extras,
    }))
}

type Params = Vec<Box<dyn ToSql + Send + Sync>>;

fn params(values: &[ParameterValue], wrap: fn(String) -> Error) -> Result<Params, Error> {
    values
        .iter()
        .map(convert::to_sql)
        .collect::<anyhow::Result<_>>()
        .map_err(|e| wrap(format!("{e:?}")))
}

fn columns(row: &tokio_postgres::Row) -> Vec<Column> {
    row.columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            data_type: convert::data_type(c.type_()),
        })
        .collect()
}

async fn execute(
    client: &deadpool_postgres::Object,
    statement: &str,
    values: &[ParameterValue],
) -> Result<u64, Error> {
    let params = params(values, Error::ValueConversionFailed)?;
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    client.execute(statement, &refs).await.map_err(db_error)
}

async fn query(
    client: &deadpool_postgres::Object,
    statement: &str,
    values: &[ParameterValue],
) -> Result<RowSet, Error> {
    let params = params(values, Error::BadParameter)?;
    let mut stream = pin!(
        client
            .query_raw(statement, params)
            .await
            .map_err(db_error)?
    );
    let mut columns_seen = None;
    let mut rows = Vec::new();
    let mut bytes = std::mem::size_of::<RowSet>();
    // As in Spin, a failure while reading rows is reported as text.
    let read = async {
        while let Some(row) = stream.try_next().await? {
            if columns_seen.is_none() {
                columns_seen = Some(columns(&row));
            }
            let row = convert::row(&row)?;
            bytes += row.iter().map(convert::memory_size).sum::<usize>();
            anyhow::ensure!(
                bytes <= MAX_RESULT_BYTES,
                "query result exceeds limit of {MAX_RESULT_BYTES} bytes"
            );
            rows.push(row);
        }
        anyhow::Ok(())
    };
    read.await
        .map_err(|e| Error::QueryFailed(QueryError::Text(format!("{e:?}"))))?;
    Ok(RowSet {
        columns: columns_seen.unwrap_or_default(),
        rows,
    })
}

/// Rows on their way to the guest, and the query's final result.
struct AsyncQuery {
    columns: Vec<Column>,
    rows: mpsc::Receiver<Row>,
    result: oneshot::Receiver<Result<(), Error>>,
}

/// Starts a query whose rows stream to the guest: the first row (or the error that replaces it)
/// is awaited here, as Spin does, and the rest are forwarded by a task.
async fn query_async(
    client: Arc<deadpool_postgres::Object>,
    statement: String,
    values: Vec<ParameterValue>,
) -> Result<AsyncQuery, Error> {
    let params = params(&values, Error::BadParameter)?;
    let (rows_tx, rows) = mpsc::channel(4);
    let (result_tx, result) = oneshot::channel();
    let stream = client
        .query_raw(statement.as_str(), params)
        .await
        .map_err(db_error)?;
    let mut stream = Box::pin(stream);
    let first = match stream.try_next().await.map_err(db_error)? {
        None => {
            let _ = result_tx.send(Ok(()));
            return Ok(AsyncQuery {
                columns: Vec::new(),
                rows,
                result,
            });
        }
        Some(row) => row,
    };
    let columns = columns(&first);
    tokio::spawn(async move {
        // Keeps the pooled client checked out until the rows are read.
        let _client = client;
        let mut next = Some(Ok(first));
        loop {
            let row = match next.take() {
                Some(row) => row,
                None => match stream.try_next().await {
                    Ok(Some(row)) => Ok(row),
                    Ok(None) => break,
                    Err(e) => Err(e),
                },
            };
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    let _ = result_tx.send(Err(db_error(e)));
                    return;
                }
            };
            let row = match convert::row(&row) {
                Ok(row) => row,
                Err(e) => {
                    let _ =
                        result_tx.send(Err(Error::QueryFailed(QueryError::Text(format!("{e:?}")))));
                    return;
                }
            };
            if row.iter().map(convert::memory_size).sum::<usize>() > MAX_RESULT_BYTES {
                let _ = result_tx.send(Err(Error::QueryFailed(QueryError::Text(format!(
                    "query result exceeds limit of {MAX_RESULT_BYTES} bytes"
                )))));
                return;
            }
            if rows_tx.send(row).await.is_err() {
                // The guest dropped the stream.
                return;
            }
        }
        let _ = result_tx.send(Ok(()));
    });
    Ok(AsyncQuery {
        columns,
        rows,
        result,
    })
}

/// Feeds rows from the query task into the guest's `stream<row>`.
struct RowProducer(mpsc::Receiver<Row>);

impl<D> StreamProducer<D> for RowProducer {
    type Item = Row;
    type Buffer = Option<Row>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, Self::Item, Self::Buffer>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        match self.get_mut().0.poll_recv(cx) {
            Poll::Ready(Some(row)) => {
                destination.set_buffer(Some(row));
                Poll::Ready(Ok(StreamResult::Completed))
            }
            Poll::Ready(None) => Poll::Ready(Ok(StreamResult::Dropped)),
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn tls_unsupported() -> Error {
    Error::Other("TLS root certificates are not supported by the test host".into())
}

impl pg::Host for HostState {}

impl pg::HostConnectionBuilder for HostState {
    async fn new(&mut self, address: String) -> wasmtime::Result<Resource<PgConnectionBuilder>> {
        Ok(self.table.push(PgConnectionBuilder { address })?)
    }

    async fn set_ca_root(
        &mut self,
        _builder: Resource<PgConnectionBuilder>,
        _certificate: String,
    ) -> PgResult<()> {
        Ok(Err(tls_unsupported()))
    }

    async fn build(
        &mut self,
        builder: Resource<PgConnectionBuilder>,
    ) -> PgResult<Resource<PgConnection>> {
        let address = self.table.get(&builder)?.address.clone();
        match self.pg.open(&address).await {
            Ok(conn) => Ok(Ok(self.table.push(conn)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn drop(&mut self, builder: Resource<PgConnectionBuilder>) -> wasmtime::Result<()> {
        self.table.delete(builder)?;
        Ok(())
    }
}

impl pg::HostConnection for HostState {
    async fn open(&mut self, address: String) -> PgResult<Resource<PgConnection>> {
        match self.pg.open(&address).await {
            Ok(conn) => Ok(Ok(self.table.push(conn)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn query(
        &mut self,
        connection: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> PgResult<RowSet> {
        let client = self.client_for_statement(&connection)?;
        Ok(query(&client, &statement, &params).await)
    }

    async fn execute(
        &mut self,
        connection: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> PgResult<u64> {
        let client = self.client_for_statement(&connection)?;
        Ok(execute(&client, &statement, &params).await)
    }

    async fn drop(&mut self, connection: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

/// Pushes a freshly opened connection into the store's table.
fn push_connection<T>(
    accessor: &Accessor<T, HasSelf<HostState>>,
    opened: Result<PgConnection, Error>,
) -> PgResult<Resource<PgConnection>> {
    match opened {
        Ok(conn) => accessor.with(|mut access| Ok(Ok(access.get().table.push(conn)?))),
        Err(e) => Ok(Err(e)),
    }
}

impl HostState {
    /// The client of `connection`, for one statement about to be sent (and counted).
    fn client_for_statement(
        &mut self,
        connection: &Resource<PgConnection>,
    ) -> wasmtime::Result<Arc<deadpool_postgres::Object>> {
        let client = self.table.get(connection)?.client.clone();
        self.calls.count_statement();
        Ok(client)
    }
}

impl pg::HostConnectionBuilderWithStore for HasSelf<HostState> {
    async fn build_async<T>(
        accessor: &Accessor<T, Self>,
        builder: Resource<PgConnectionBuilder>,
    ) -> PgResult<Resource<PgConnection>> {
        let (pg, address) = accessor.with(|mut access| {
            let host = access.get();
            let address = host.table.get(&builder)?.address.clone();
            wasmtime::Result::<_>::Ok((host.pg.clone(), address))
        })?;
        let opened = pg.open(&address).await;
        push_connection(accessor, opened)
    }
}

impl pg::HostConnectionWithStore for HasSelf<HostState> {
    async fn open_async<T>(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> PgResult<Resource<PgConnection>> {
        let pg = accessor.with(|mut access| access.get().pg.clone());
        let opened = pg.open(&address).await;
        push_connection(accessor, opened)
    }

    async fn execute_async<T>(
        accessor: &Accessor<T, Self>,
        connection: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> PgResult<u64> {
        let client = accessor.with(|mut access| access.get().client_for_statement(&connection))?;
        Ok(execute(&client, &statement, &params).await)
    }

    async fn query_async<T>(
        accessor: &Accessor<T, Self>,
        connection: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> PgResult<(
        Vec<Column>,
        StreamReader<Row>,
        FutureReader<Result<(), Error>>,
    )> {
        let client = accessor.with(|mut access| access.get().client_for_statement(&connection))?;
        let started = match query_async(client, statement, params).await {
            Ok(started) => started,
            Err(e) => return Ok(Err(e)),
        };
        let AsyncQuery {
            columns,
            rows,
            result,
        } = started;
        let result =
            async move {
                wasmtime::Result::<_>::Ok(result.await.unwrap_or_else(|_| {
                    Err(Error::Other("the query ended without a result".into()))
                }))
            };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, RowProducer(rows))?;
            let result = FutureReader::new(&mut access, result)?;
            Ok(Ok((columns, rows, result)))
        })
    }
}
