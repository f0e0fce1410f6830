//! Flags over the library's [`Choice`] enums: the possible values (with
//! their help lines) come from the domain type, so the library needs no
//! command-line crate and `--help` still lists every value.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use probegate::util::Choice;

/// `#[arg(value_parser = choice::<Pool>())]`.
pub fn choice<T: Choice>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(
        T::ALL
            .iter()
            .map(|v| PossibleValue::new(v.name()).help(v.help())),
    )
    // PossibleValuesParser has already refused anything not in ALL.
    .try_map(|s| T::from_name(&s).ok_or_else(|| format!("unknown value `{s}`")))
}
