//! Reading the shape of a module's types through serde, so that `plumb doc`
//! and the parser share one source of truth: the parameter keys `plumb doc`
//! lists are the keys the parser accepts.

use serde::de::{self, Deserialize, Visitor};

#[derive(Debug)]
struct Stop(Vec<&'static str>);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("introspection")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop(Vec::new())
    }
}

struct FieldCatcher;

impl<'de> de::Deserializer<'de> for FieldCatcher {
    type Error = Stop;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop(Vec::new()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        Err(Stop(fields.to_vec()))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The keys of struct `T` as its `Deserialize` impl declares them.
#[must_use]
pub fn struct_fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    match T::deserialize(FieldCatcher) {
        Err(Stop(f)) => f,
        Ok(_) => Vec::new(),
    }
}
