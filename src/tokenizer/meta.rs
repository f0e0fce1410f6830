//! Typed access to GGUF metadata: every read names the file and the field,
//! so a malformed file fails with an error instead of a panic.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use super::{Result, TokenizerError};

fn type_name(v: &Value) -> String {
    match v {
        Value::U8(_) => "u8".into(),
        Value::I8(_) => "i8".into(),
        Value::U16(_) => "u16".into(),
        Value::I16(_) => "i16".into(),
        Value::U32(_) => "u32".into(),
        Value::I32(_) => "i32".into(),
        Value::U64(_) => "u64".into(),
        Value::I64(_) => "i64".into(),
        Value::F32(_) => "f32".into(),
        Value::F64(_) => "f64".into(),
        Value::Bool(_) => "bool".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => match a.first() {
            Some(first) => format!("array of {}", type_name(first)),
            None => "empty array".into(),
        },
    }
}

fn as_int(v: &Value) -> Option<i128> {
    Some(match v {
        Value::U8(x) => *x as i128,
        Value::I8(x) => *x as i128,
        Value::U16(x) => *x as i128,
        Value::I16(x) => *x as i128,
        Value::U32(x) => *x as i128,
        Value::I32(x) => *x as i128,
        Value::U64(x) => *x as i128,
        Value::I64(x) => *x as i128,
        _ => return None,
    })
}

/// Any GGUF number as f64 (integers rounded to the nearest f64); the
/// checkpoint's config reader takes its numbers the same way.
pub fn gguf_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        other => as_int(other).map(|x| x as f64),
    }
}

/// Why an array element was refused: not of the expected type, or an invalid value.
enum Refused {
    Type(&'static str),
    Invalid(&'static str),
}

pub(super) struct Meta<'a> {
    pub(super) md: &'a HashMap<String, Value>,
    pub(super) file: &'a Path,
}

impl<'a> Meta<'a> {
    pub(super) fn missing(&self, field: &str) -> TokenizerError {
        TokenizerError::MissingField {
            file: self.file.to_path_buf(),
            field: field.to_string(),
        }
    }
    pub(super) fn wrong(&self, field: &str, expected: &'static str, v: &Value) -> TokenizerError {
        TokenizerError::WrongType {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            expected,
            found: type_name(v),
        }
    }
    pub(super) fn invalid(&self, field: &str, reason: impl Into<String>) -> TokenizerError {
        TokenizerError::Invalid {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
    pub(super) fn build_err(&self, field: &str, reason: impl std::fmt::Display) -> TokenizerError {
        TokenizerError::Build {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(super) fn opt_str(&self, field: &str) -> Result<Option<&'a str>> {
        match self.md.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.wrong(field, "string", v)),
        }
    }

    pub(super) fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.md.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(field, "bool", v)),
        }
    }

    fn opt_array(&self, field: &str) -> Result<Option<&'a [Value]>> {
        match self.md.get(field) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.as_slice())),
            Some(v) => Err(self.wrong(field, "array", v)),
        }
    }

    /// An array field, each element through `each`; the first element it refuses is the error,
    /// named `field[i]`.
    fn array_of<T>(
        &self,
        field: &str,
        each: impl Fn(&'a Value) -> std::result::Result<T, Refused>,
    ) -> Result<Option<Vec<T>>> {
        let Some(arr) = self.opt_array(field)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            match each(v) {
                Ok(x) => out.push(x),
                Err(Refused::Type(expected)) => {
                    return Err(self.wrong(&format!("{field}[{i}]"), expected, v))
                }
                Err(Refused::Invalid(reason)) => {
                    return Err(self.invalid(&format!("{field}[{i}]"), reason))
                }
            }
        }
        Ok(Some(out))
    }

    pub(super) fn str_array(&self, field: &str) -> Result<Option<Vec<&'a str>>> {
        self.array_of(field, |v| match v {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(Refused::Type("string")),
        })
    }

    pub(super) fn int_array(&self, field: &str) -> Result<Option<Vec<i64>>> {
        self.array_of(field, |v| {
            as_int(v)
                .and_then(|x| i64::try_from(x).ok())
                .ok_or(Refused::Type("integer"))
        })
    }

    pub(super) fn float_array(&self, field: &str) -> Result<Option<Vec<f64>>> {
        self.array_of(field, |v| {
            let x = gguf_f64(v).ok_or(Refused::Type("number"))?;
            if x.is_nan() {
                return Err(Refused::Invalid("score is NaN"));
            }
            Ok(x)
        })
    }

    /// A token id that must index `n_tokens` entries.
    pub(super) fn opt_token_id(&self, field: &str, n_tokens: usize) -> Result<Option<u32>> {
        let Some(v) = self.md.get(field) else {
            return Ok(None);
        };
        let Some(x) = as_int(v) else {
            return Err(self.wrong(field, "unsigned integer", v));
        };
        if x < 0 || x >= n_tokens as i128 {
            return Err(self.invalid(
                field,
                format!("token id {x} is out of range (vocabulary has {n_tokens} tokens)"),
            ));
        }
        Ok(Some(x as u32))
    }
}
