//! Field-level validation errors shared by every input type.

use serde::Serialize;
use serde_json::Value;

/// One invalid input field, reported to the client in the problem's `errors` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where the problem is, as a dotted path into the request (`title`, `recurrence.interval`,
    /// or a query parameter name).
    pub field: String,
    /// A sentence a person can act on.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A JSON number as a whole number: `5` and `5.0` alike, since JSON (and JSON Schema's
/// `integer`) does not tell them apart and many encoders write one for the other. `None` for a
/// fraction or a value beyond `i64`.
pub fn whole_number(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        // 2^63 as f64; values at or past it do not fit.
        (f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0).then_some(f as i64)
    })
}

/// `deserialize_with` for an optional whole number read by [`whole_number`] that fits `T`.
pub fn optional_whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::Deserialize as _;
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|n| fitting_whole_number(&n))
        .transpose()
}

/// `deserialize_with` for a whole number read by [`whole_number`] that fits `T`.
pub fn required_whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::Deserialize as _;
    fitting_whole_number(&serde_json::Number::deserialize(deserializer)?)
}

fn fitting_whole_number<E: serde::de::Error, T: TryFrom<i64>>(
    n: &serde_json::Number,
) -> Result<T, E> {
    whole_number(n)
        .and_then(|whole| T::try_from(whole).ok())
        .ok_or_else(|| {
            let range = std::any::type_name::<T>();
            E::custom(format!("{n} is not a whole number that fits {range}"))
        })
}

/// Collects field errors so a client sees every problem of a request at once.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    pub fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        self.0.extend(errors);
    }

    /// Keeps the value when it is valid, records the error otherwise.
    pub fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(error);
                None
            }
        }
    }

    /// Like [`Errors::take`] for validators that report several errors.
    pub fn take_all<T>(&mut self, result: Result<T, Vec<FieldError>>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(errors) => {
                self.0.extend(errors);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.0)
        }
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

/// How a JSON value's kind reads in an error message ("must be a string, not a number").
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
