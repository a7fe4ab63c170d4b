//! Reading Spin variables. A missing or unreadable variable is a deployment mistake: it is
//! logged and answered as an internal error, never guessed. Only `crate::settings` reads them.
//!
//! Each instance reads a variable from Spin once and keeps its value. A read is an async host
//! call that suspends the guest, and on Spin 4.0.2 a response returned after the guest has
//! suspended leaves in two segments and can wait ~40 ms for the client's delayed ACK
//! (BENCHMARKS.md, "The 40 ms stall"); a route that needs nothing but settings, such as
//! `GET /dapr/subscribe`, then answers without suspending at all. Kept values are as fresh as
//! the instance: Spin 4.0.2 retires one after its 128th request or a second idle, and a value
//! changed in a dynamic provider (Vault, Azure Key Vault) is read by the instances after it.

use spin_sdk::variables;
use std::cell::RefCell;
use std::collections::HashMap;
use todo_core::error::ApiError;

thread_local! {
    /// The values this instance has read (a component instance is single-threaded; its
    /// concurrent requests share it, and none holds the borrow across an await).
    static READ: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}

pub async fn get(name: &str) -> Result<String, ApiError> {
    if let Some(value) = READ.with_borrow(|read| read.get(name).cloned()) {
        return Ok(value);
    }
    let value = variables::get(name)
        .await
        .map_err(|e| ApiError::internal(format!("variable {name}: {e:?}")))?;
    READ.with_borrow_mut(|read| read.insert(name.to_owned(), value.clone()));
    Ok(value)
}

/// Reads `names` in order and stops at the first that cannot be read, as reading them one
/// after the other would.
pub async fn all<const N: usize>(names: [&str; N]) -> Result<[String; N], ApiError> {
    let mut values = std::array::from_fn(|_| String::new());
    for (value, name) in values.iter_mut().zip(names) {
        *value = get(name).await?;
    }
    Ok(values)
}

pub async fn number<T: std::str::FromStr>(name: &str) -> Result<T, ApiError> {
    let raw = get(name).await?;
    raw.trim()
        .parse()
        .map_err(|_| ApiError::internal(format!("variable {name} = '{raw}' is not a number")))
}
