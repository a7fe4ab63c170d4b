//! Reading Spin variables. A missing or unreadable variable is a deployment mistake: it is
//! logged and answered as an internal error, never guessed. Only `crate::settings` reads them.

use spin_sdk::variables;
use todo_core::error::ApiError;

pub async fn get(name: &str) -> Result<String, ApiError> {
    variables::get(name)
        .await
        .map_err(|e| ApiError::internal(format!("variable {name}: {e:?}")))
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
