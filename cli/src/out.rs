//! What the commands print about what happens: a line of text per event,
//! or with `--json` one JSON object per line, `{"event": KIND, …}` with the
//! event's fields and the text it would have printed (`"text"`), so that
//! scripts read events without scraping text.

use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Turns JSON lines on (`--json`) for the whole process.
pub(crate) fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// One event: `text` as a line, or with `--json` an object with `event`,
/// the fields of `fields` (an object) and `text`.
pub(crate) fn emit(kind: &str, text: &str, fields: Value) {
    if JSON.load(Ordering::Relaxed) {
        println!("{}", json_line(kind, text, fields));
    } else {
        println!("{text}");
    }
}

/// The JSON object of one event.
fn json_line(kind: &str, text: &str, fields: Value) -> String {
    let mut object = Map::new();
    object.insert("event".to_owned(), Value::from(kind));
    if let Value::Object(extra) = fields {
        object.extend(extra);
    }
    object.insert("text".to_owned(), Value::from(text));
    Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_is_one_object_with_its_fields_and_text() {
        let line = json_line("response", "180 Ringing", json!({"code": 180, "reason": "Ringing"}));
        assert_eq!(line, r#"{"event":"response","code":180,"reason":"Ringing","text":"180 Ringing"}"#);
        let back: Value = serde_json::from_str(&json_line("notify", "a\nb\"", json!({}))).unwrap();
        assert_eq!(back["text"], "a\nb\"");
    }
}
