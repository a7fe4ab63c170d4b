//! The test databases: clones of the migrated template on the server `scripts/test.sh` starts
//! (`TEST_DATABASE_URL`, the server without a database name; `TEST_TEMPLATE_DB`, the template).

use tokio::sync::{Mutex, OnceCell};
use uuid::Uuid;

/// `postgres://user@host:port` of the test server.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL",
    )
}

/// The migrated template the test databases are cloned from.
pub fn template() -> String {
    std::env::var("TEST_TEMPLATE_DB").unwrap_or_else(|_| "todo_template".into())
}

/// The port of the test server.
pub fn server_port() -> u16 {
    server_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("TEST_DATABASE_URL ends with :port")
}

pub async fn connect(db_name: &str) -> tokio_postgres::Client {
    connect_url(&format!("{}/{db_name}", server_url())).await
}

/// A client of the database at `url`.
pub async fn connect_url(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Clones the template into a new database `name`. Clones of one template are made one at a
/// time: PostgreSQL refuses to copy a database another session is copying.
pub async fn clone_template(name: &str) {
    static CLONING: Mutex<()> = Mutex::const_new(());
    let _one_at_a_time = CLONING.lock().await;
    connect("postgres")
        .await
        .batch_execute(&format!("create database {name} template {}", template()))
        .await
        .unwrap_or_else(|e| panic!("create the test database {name}: {e}"));
}

/// The database this test process shares between its tests, cloned once.
pub async fn database() -> &'static (String, u16) {
    static DB: OnceCell<(String, u16)> = OnceCell::const_new();
    DB.get_or_init(|| async {
        let name = format!("todo_test_{}", std::process::id());
        clone_template(&name).await;
        (name, server_port())
    })
    .await
}

/// A database of its own for one test.
pub async fn own_database() -> String {
    database().await;
    let name = format!(
        "todo_test_{}_{}",
        std::process::id(),
        Uuid::now_v7().simple()
    );
    clone_template(&name).await;
    name
}
