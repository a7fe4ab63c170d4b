//! Conversions between `spin:postgres@4.2.0` values and tokio-postgres, as Spin 4 does them.
//!
//! The table (spinframework/spin `crates/factor-outbound-pg/src/types.rs` and `types/convert.rs`):
//!
//! | Postgres column type                | `db-data-type` / `db-value`               |
//! |-------------------------------------|-------------------------------------------|
//! | BOOL, BYTEA, FLOAT4/8, INT2/4/8     | boolean, binary, floating32/64, int16/32/64 |
//! | TEXT, VARCHAR, BPCHAR               | str                                       |
//! | TIMESTAMP, TIMESTAMPTZ              | datetime (type); the value is read as a naive TIMESTAMP |
//! | DATE, TIME                          | date, time                                |
//! | UUID                                | uuid (hyphenated lower-case string)       |
//! | JSONB                               | jsonb (the JSON text as bytes)            |
//! | NUMERIC                             | decimal (base-10 string)                  |
//! | INT4RANGE, INT8RANGE, NUMRANGE      | range-int32, range-int64, range-decimal   |
//! | INT4[], INT8[], NUMERIC[], TEXT[]…  | array-int32, array-int64, array-decimal, array-str |
//! | INTERVAL                            | interval                                  |
//! | anything else                       | other(type name) / unsupported(raw binary) |
//!
//! Spin reads TIMESTAMPTZ values with the TIMESTAMP decoder, which tokio-postgres refuses, so on
//! real Spin a TIMESTAMPTZ value fails the query ("error deserializing column"); binding a
//! `datetime` parameter to a TIMESTAMPTZ placeholder fails the same way (and `timestamp` only binds
//! to TIMESTAMPTZ). This host reproduces that so code that passes here also passes on Spin:
//! store UTC in `timestamp` columns, or cast (`col::timestamp`, `$1::timestamp`).
//!
//! Parameters bind with the Rust type Spin uses for each variant, so a variant only binds to the
//! placeholder types that Rust type accepts (e.g. `str` binds to text types only).

use crate::bindings::spin::postgres::postgres::{
    DbDataType, DbValue, Interval, ParameterValue, RangeBoundKind,
};
use anyhow::{Context as _, Result, anyhow, bail};
use bytes::BufMut as _;
use postgres_range::{BoundSided, BoundType, Normalizable, Range, RangeBound};
use rust_decimal::Decimal;
use std::error::Error as StdError;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

type BoxError = Box<dyn StdError + Sync + Send>;

/// The WIT data type reported for a column of type `ty`.
pub fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::BYTEA => DbDataType::Binary,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(ty.name().to_owned()),
    }
}

fn get<'a, T: FromSql<'a>, W>(
    row: &'a Row,
    index: usize,
    wrap: impl FnOnce(T) -> Result<W>,
    ctor: impl FnOnce(W) -> DbValue,
) -> Result<DbValue> {
    let value: Option<T> = row.try_get(index)?;
    Ok(match value {
        Some(v) => ctor(wrap(v)?),
        None => DbValue::DbNull,
    })
}

fn plain<T>(v: T) -> Result<T> {
    Ok(v)
}

/// Converts column `index` of `row`.
pub fn entry(row: &Row, index: usize) -> Result<DbValue> {
    let ty = row.columns()[index].type_().clone();
    match ty {
        Type::BOOL => get(row, index, plain, DbValue::Boolean),
        Type::BYTEA => get(row, index, plain, DbValue::Binary),
        Type::FLOAT4 => get(row, index, plain, DbValue::Floating32),
        Type::FLOAT8 => get(row, index, plain, DbValue::Floating64),
        Type::INT2 => get(row, index, plain, DbValue::Int16),
        Type::INT4 => get(row, index, plain, DbValue::Int32),
        Type::INT8 => get(row, index, plain, DbValue::Int64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => get(row, index, plain, DbValue::Str),
        // Spin decodes both with the naive TIMESTAMP decoder; see the module docs.
        Type::TIMESTAMP | Type::TIMESTAMPTZ => get(row, index, datetime_to_wit, DbValue::Datetime),
        Type::DATE => get(row, index, date_to_wit, DbValue::Date),
        Type::TIME => get(row, index, time_to_wit, DbValue::Time),
        Type::UUID => get(row, index, |v: uuid::Uuid| Ok(v.to_string()), DbValue::Uuid),
        Type::JSONB => get(
            row,
            index,
            |v: serde_json::Value| serde_json::to_vec(&v).context("invalid JSON from database"),
            DbValue::Jsonb,
        ),
        Type::NUMERIC => get(row, index, |v: Decimal| Ok(v.to_string()), DbValue::Decimal),
        Type::INT4_RANGE => get(row, index, |v| Ok(range_to_wit(v)), DbValue::RangeInt32),
        Type::INT8_RANGE => get(row, index, |v| Ok(range_to_wit(v)), DbValue::RangeInt64),
        Type::NUM_RANGE => get(
            row,
            index,
            |v| Ok(decimal_range_to_wit(v)),
            DbValue::RangeDecimal,
        ),
        Type::INT4_ARRAY => get(row, index, plain, DbValue::ArrayInt32),
        Type::INT8_ARRAY => get(row, index, plain, DbValue::ArrayInt64),
        Type::NUMERIC_ARRAY => get(
            row,
            index,
            |v: Vec<Option<Decimal>>| Ok(v.iter().map(|d| d.map(|d| d.to_string())).collect()),
            DbValue::ArrayDecimal,
        ),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
            get(row, index, plain, DbValue::ArrayStr)
        }
        Type::INTERVAL => get(row, index, |v: PgInterval| Ok(v.0), DbValue::Interval),
        _ => get(row, index, |v: Other| Ok(v.0), DbValue::Unsupported),
    }
}

/// Converts a whole row.
pub fn row(row: &Row) -> Result<Vec<DbValue>> {
    (0..row.len()).map(|i| entry(row, i)).collect()
}

/// A rough count of the memory a value takes, for Spin's result-size limit.
pub fn memory_size(value: &DbValue) -> usize {
    let heap = match value {
        DbValue::Str(s) | DbValue::Uuid(s) | DbValue::Decimal(s) => s.len(),
        DbValue::Binary(b) | DbValue::Jsonb(b) | DbValue::Unsupported(b) => b.len(),
        DbValue::ArrayInt32(v) => v.len() * std::mem::size_of::<Option<i32>>(),
        DbValue::ArrayInt64(v) => v.len() * std::mem::size_of::<Option<i64>>(),
        DbValue::ArrayDecimal(v) | DbValue::ArrayStr(v) => v
            .iter()
            .map(|s| std::mem::size_of::<Option<String>>() + s.as_ref().map_or(0, String::len))
            .sum(),
        DbValue::RangeDecimal((lo, hi)) => {
            lo.as_ref().map_or(0, |b| b.0.len()) + hi.as_ref().map_or(0, |b| b.0.len())
        }
        _ => 0,
    };
    std::mem::size_of::<DbValue>() + heap
}

type WitDateTime = (i32, u8, u8, u8, u8, u8, u32);

fn datetime_to_wit(v: chrono::NaiveDateTime) -> Result<WitDateTime> {
    use chrono::{Datelike as _, Timelike as _};
    Ok((
        v.year(),
        v.month().try_into()?,
        v.day().try_into()?,
        v.hour().try_into()?,
        v.minute().try_into()?,
        v.second().try_into()?,
        v.nanosecond(),
    ))
}

fn date_to_wit(v: chrono::NaiveDate) -> Result<(i32, u8, u8)> {
    use chrono::Datelike as _;
    Ok((v.year(), v.month().try_into()?, v.day().try_into()?))
}

fn time_to_wit(v: chrono::NaiveTime) -> Result<(u8, u8, u8, u32)> {
    use chrono::Timelike as _;
    Ok((
        v.hour().try_into()?,
        v.minute().try_into()?,
        v.second().try_into()?,
        v.nanosecond(),
    ))
}

fn date_to_pg(&(y, m, d): &(i32, u8, u8)) -> Result<chrono::NaiveDate> {
    chrono::NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| anyhow!("invalid date y={y}, m={m}, d={d}"))
}

fn time_to_pg(&(h, min, s, ns): &(u8, u8, u8, u32)) -> Result<chrono::NaiveTime> {
    chrono::NaiveTime::from_hms_nano_opt(h.into(), min.into(), s.into(), ns)
        .ok_or_else(|| anyhow!("invalid time {h}:{min}:{s}:{ns}"))
}

fn datetime_to_pg(&(y, mon, d, h, min, s, ns): &WitDateTime) -> Result<chrono::NaiveDateTime> {
    Ok(chrono::NaiveDateTime::new(
        date_to_pg(&(y, mon, d))?,
        time_to_pg(&(h, min, s, ns))?,
    ))
}

fn decimal_to_pg(v: &str) -> Result<Decimal> {
    Decimal::from_str_exact(v).with_context(|| format!("invalid decimal {v}"))
}

type WitBound<T> = Option<(T, RangeBoundKind)>;

fn bound_kind(t: BoundType) -> RangeBoundKind {
    match t {
        BoundType::Inclusive => RangeBoundKind::Inclusive,
        BoundType::Exclusive => RangeBoundKind::Exclusive,
    }
}

fn bound_type(k: RangeBoundKind) -> BoundType {
    match k {
        RangeBoundKind::Inclusive => BoundType::Inclusive,
        RangeBoundKind::Exclusive => BoundType::Exclusive,
    }
}

fn range_to_wit<T: Copy + Normalizable + PartialOrd>(v: Range<T>) -> (WitBound<T>, WitBound<T>) {
    (
        v.lower().map(|b| (b.value, bound_kind(b.type_))),
        v.upper().map(|b| (b.value, bound_kind(b.type_))),
    )
}

fn decimal_range_to_wit(v: Range<RangeableDecimal>) -> (WitBound<String>, WitBound<String>) {
    (
        v.lower()
            .map(|b| (b.value.0.to_string(), bound_kind(b.type_))),
        v.upper()
            .map(|b| (b.value.0.to_string(), bound_kind(b.type_))),
    )
}

/// Integer bounds are normalised (`[a, b]` becomes `[a, b+1)`); postgres_range asserts on
/// overflow, so the bounds that would overflow are refused here instead of panicking the host.
fn int_range_to_pg<T>((lo, hi): &(WitBound<T>, WitBound<T>), max: T) -> Result<Range<T>>
where
    T: Copy + PartialEq + Normalizable + PartialOrd + std::fmt::Display,
{
    if let Some((v, RangeBoundKind::Exclusive)) = lo
        && *v == max
    {
        bail!("range lower bound ({v} exclusive) overflows");
    }
    if let Some((v, RangeBoundKind::Inclusive)) = hi
        && *v == max
    {
        bail!("range upper bound ({v} inclusive) overflows");
    }
    Ok(Range::new(
        lo.map(|(v, k)| RangeBound::new(v, bound_type(k))),
        hi.map(|(v, k)| RangeBound::new(v, bound_type(k))),
    ))
}

fn decimal_bound<S: BoundSided>(
    b: &WitBound<String>,
) -> Result<Option<RangeBound<S, RangeableDecimal>>> {
    b.as_ref()
        .map(|(v, k)| {
            Ok(RangeBound::new(
                RangeableDecimal(decimal_to_pg(v)?),
                bound_type(*k),
            ))
        })
        .transpose()
}

/// The Rust value Spin binds for a parameter.
pub fn to_sql(value: &ParameterValue) -> Result<Box<dyn ToSql + Send + Sync>> {
    Ok(match value {
        ParameterValue::Boolean(v) => Box::new(*v),
        ParameterValue::Int8(v) => Box::new(*v),
        ParameterValue::Int16(v) => Box::new(*v),
        ParameterValue::Int32(v) => Box::new(*v),
        ParameterValue::Int64(v) => Box::new(*v),
        ParameterValue::Floating32(v) => Box::new(*v),
        ParameterValue::Floating64(v) => Box::new(*v),
        ParameterValue::Str(v) => Box::new(v.clone()),
        ParameterValue::Binary(v) => Box::new(v.clone()),
        ParameterValue::Date(v) => Box::new(date_to_pg(v)?),
        ParameterValue::Time(v) => Box::new(time_to_pg(v)?),
        ParameterValue::Datetime(v) => Box::new(datetime_to_pg(v)?),
        ParameterValue::Timestamp(v) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(*v, 0)
                .ok_or_else(|| anyhow!("invalid epoch timestamp {v}"))?,
        ),
        ParameterValue::Uuid(v) => {
            Box::new(uuid::Uuid::parse_str(v).with_context(|| format!("invalid UUID {v}"))?)
        }
        ParameterValue::Jsonb(v) => Box::new(
            serde_json::from_slice::<serde_json::Value>(v)
                .with_context(|| format!("invalid JSON {}", String::from_utf8_lossy(v)))?,
        ),
        ParameterValue::Decimal(v) => Box::new(decimal_to_pg(v)?),
        ParameterValue::RangeInt32(v) => Box::new(int_range_to_pg(v, i32::MAX)?),
        ParameterValue::RangeInt64(v) => Box::new(int_range_to_pg(v, i64::MAX)?),
        ParameterValue::RangeDecimal((lo, hi)) => {
            Box::new(Range::new(decimal_bound(lo)?, decimal_bound(hi)?))
        }
        ParameterValue::ArrayInt32(v) => Box::new(v.clone()),
        ParameterValue::ArrayInt64(v) => Box::new(v.clone()),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.iter()
                .map(|d| d.as_deref().map(decimal_to_pg).transpose())
                .collect::<Result<Vec<_>>>()?,
        ),
        ParameterValue::ArrayStr(v) => Box::new(v.clone()),
        ParameterValue::Interval(v) => Box::new(PgInterval(*v)),
        ParameterValue::DbNull => Box::new(PgNull),
    })
}

/// INTERVAL in Postgres' binary form: microseconds, days, months.
#[derive(Debug)]
struct PgInterval(Interval);

impl ToSql for PgInterval {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        out.put_i64(self.0.micros);
        out.put_i32(self.0.days);
        out.put_i32(self.0.months);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

impl FromSql<'_> for PgInterval {
    fn from_sql(_: &Type, raw: &[u8]) -> Result<Self, BoxError> {
        let bytes: [u8; 16] = raw
            .try_into()
            .map_err(|_| "unexpected binary format for Postgres INTERVAL")?;
        let [
            m0,
            m1,
            m2,
            m3,
            m4,
            m5,
            m6,
            m7,
            d0,
            d1,
            d2,
            d3,
            n0,
            n1,
            n2,
            n3,
        ] = bytes;
        Ok(Self(Interval {
            micros: i64::from_be_bytes([m0, m1, m2, m3, m4, m5, m6, m7]),
            days: i32::from_be_bytes([d0, d1, d2, d3]),
            months: i32::from_be_bytes([n0, n1, n2, n3]),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// SQL NULL for any placeholder type.
#[derive(Debug)]
struct PgNull;

impl ToSql for PgNull {
    fn to_sql(&self, _: &Type, _: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The raw binary value of a column type without a WIT mapping.
struct Other(Vec<u8>);

impl FromSql<'_> for Other {
    fn from_sql(_: &Type, raw: &[u8]) -> Result<Self, BoxError> {
        Ok(Self(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// NUMERIC as a range element; continuous, so bounds are not normalised.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
struct RangeableDecimal(Decimal);

impl Normalizable for RangeableDecimal {
    fn normalize<S: BoundSided>(bound: RangeBound<S, Self>) -> RangeBound<S, Self> {
        bound
    }
}

impl ToSql for RangeableDecimal {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <Decimal as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl FromSql<'_> for RangeableDecimal {
    fn from_sql(ty: &Type, raw: &[u8]) -> Result<Self, BoxError> {
        Decimal::from_sql(ty, raw).map(Self)
    }

    fn accepts(ty: &Type) -> bool {
        <Decimal as FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &ParameterValue, ty: &Type) -> Result<(IsNull, Vec<u8>)> {
        let boxed = to_sql(value)?;
        let mut buf = bytes::BytesMut::new();
        let is_null = boxed
            .to_sql_checked(ty, &mut buf)
            .map_err(|e| anyhow!("{e}"))?;
        Ok((is_null, buf.to_vec()))
    }

    #[test]
    fn column_types_map_to_spins_data_types() {
        assert_eq!(data_type(&Type::TIMESTAMP), DbDataType::Datetime);
        assert_eq!(data_type(&Type::TIMESTAMPTZ), DbDataType::Datetime);
        assert_eq!(data_type(&Type::UUID), DbDataType::Uuid);
        assert_eq!(data_type(&Type::JSONB), DbDataType::Jsonb);
        assert_eq!(data_type(&Type::NUMERIC), DbDataType::Decimal);
        assert_eq!(data_type(&Type::VARCHAR_ARRAY), DbDataType::ArrayStr);
        assert_eq!(data_type(&Type::JSON), DbDataType::Other("json".into()));
        assert_eq!(data_type(&Type::INET), DbDataType::Other("inet".into()));
    }

    #[test]
    fn parameters_bind_only_where_spins_rust_types_do() {
        let datetime = ParameterValue::Datetime((2024, 3, 10, 2, 30, 0, 5));
        assert!(encode(&datetime, &Type::TIMESTAMP).is_ok());
        assert!(encode(&datetime, &Type::TIMESTAMPTZ).is_err());
        let epoch = ParameterValue::Timestamp(86_400);
        assert!(encode(&epoch, &Type::TIMESTAMPTZ).is_ok());
        assert!(encode(&epoch, &Type::TIMESTAMP).is_err());
        assert!(encode(&ParameterValue::Str("x".into()), &Type::INT4).is_err());
        assert!(encode(&ParameterValue::Int32(1), &Type::INT8).is_err());
        let (null, _) = encode(&ParameterValue::DbNull, &Type::UUID).unwrap();
        assert!(matches!(null, IsNull::Yes));
    }

    #[test]
    fn invalid_parameter_values_are_errors_not_panics() {
        for bad in [
            ParameterValue::Uuid("not-a-uuid".into()),
            ParameterValue::Decimal("1.2.3".into()),
            ParameterValue::Jsonb(b"{".to_vec()),
            ParameterValue::Date((2023, 2, 29)),
            ParameterValue::Time((24, 0, 0, 0)),
            ParameterValue::Datetime((2024, 13, 1, 0, 0, 0, 0)),
            ParameterValue::Timestamp(i64::MAX),
            ParameterValue::RangeInt32((None, Some((i32::MAX, RangeBoundKind::Inclusive)))),
            ParameterValue::RangeInt64((Some((i64::MAX, RangeBoundKind::Exclusive)), None)),
            ParameterValue::ArrayDecimal(vec![Some("x".into())]),
        ] {
            assert!(to_sql(&bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn uuid_and_json_parameters_use_their_binary_forms() {
        let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let (_, raw) = encode(&ParameterValue::Uuid(id.into()), &Type::UUID).unwrap();
        assert_eq!(raw, uuid::Uuid::parse_str(id).unwrap().as_bytes().to_vec());
        let (_, raw) =
            encode(&ParameterValue::Jsonb(br#"{"a":1}"#.to_vec()), &Type::JSONB).unwrap();
        assert_eq!(raw[0], 1, "jsonb binary format version");
        assert_eq!(&raw[1..], br#"{"a":1}"#);
    }

    #[test]
    fn intervals_round_trip_through_the_binary_form() {
        let iv = Interval {
            micros: -5,
            days: 2,
            months: 14,
        };
        let (_, raw) = encode(&ParameterValue::Interval(iv), &Type::INTERVAL).unwrap();
        let back = PgInterval::from_sql(&Type::INTERVAL, &raw).unwrap();
        assert_eq!(back.0, iv);
        assert!(PgInterval::from_sql(&Type::INTERVAL, &raw[1..]).is_err());
    }

    #[test]
    fn decimals_and_dates_convert_both_ways() {
        let (_, raw) = encode(
            &ParameterValue::Decimal("12345.6789".into()),
            &Type::NUMERIC,
        )
        .unwrap();
        assert_eq!(
            Decimal::from_sql(&Type::NUMERIC, &raw).unwrap().to_string(),
            "12345.6789"
        );
        let dt = chrono::NaiveDate::from_ymd_opt(2024, 2, 29)
            .unwrap()
            .and_hms_nano_opt(23, 59, 58, 7)
            .unwrap();
        assert_eq!(datetime_to_wit(dt).unwrap(), (2024, 2, 29, 23, 59, 58, 7));
        assert_eq!(datetime_to_pg(&(2024, 2, 29, 23, 59, 58, 7)).unwrap(), dt);
    }

    #[test]
    fn ranges_keep_their_bounds() {
        let wit = (
            Some(("1.5".to_string(), RangeBoundKind::Inclusive)),
            Some(("7.25".to_string(), RangeBoundKind::Exclusive)),
        );
        let pg = Range::new(
            decimal_bound(&wit.0).unwrap(),
            decimal_bound(&wit.1).unwrap(),
        );
        assert_eq!(decimal_range_to_wit(pg), wit);
        let ints =
            int_range_to_pg(&(Some((1, RangeBoundKind::Inclusive)), None), i32::MAX).unwrap();
        assert_eq!(
            range_to_wit(ints),
            (Some((1, RangeBoundKind::Inclusive)), None)
        );
    }
}
