//! How a command's result is printed: one JSON object on one line (the default, for scripts),
//! or tables for people: the object's plain fields as one table, and each list of objects in
//! it as a table of its own.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Json,
    Table,
}

pub fn render(value: &Value, output: Output) -> String {
    match output {
        Output::Json => value.to_string(),
        Output::Table => tables(value),
    }
}

fn tables(value: &Value) -> String {
    let Some(object) = value.as_object() else {
        return cell(value);
    };
    let mut fields = new_table();
    fields.set_header(["field", "value"]);
    let mut lists = Vec::new();
    for (name, v) in object {
        match v.as_array() {
            Some(rows) if rows.iter().all(Value::is_object) => lists.push((name, rows)),
            _ => {
                fields.add_row([name.clone(), cell(v)]);
            }
        }
    }
    let mut out = Vec::new();
    if !fields.is_empty() {
        out.push(fields.to_string());
    }
    for (name, rows) in lists {
        out.push(format!("{name}: {}", rows.len()));
        if let Some(first) = rows.first().and_then(Value::as_object) {
            let columns: Vec<&String> = first.keys().collect();
            let mut table = new_table();
            table.set_header(columns.iter().map(|c| c.as_str()));
            for row in rows {
                table.add_row(columns.iter().map(|c| cell(&row[c.as_str()])));
            }
            out.push(table.to_string());
        }
    }
    out.join("\n")
}

fn new_table() -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table
}

/// A value in a cell: text as itself, nothing as empty, anything else as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_stays_one_line_and_tables_show_every_row() {
        let v = serde_json::json!({
            "account": "a1",
            "keys": [
                {"id": "k1", "enabled": true, "label": null},
                {"id": "k2", "enabled": false, "label": "ci"}
            ]
        });
        assert_eq!(render(&v, Output::Json), v.to_string());
        let t = render(&v, Output::Table);
        for text in ["account", "a1", "keys: 2", "k1", "k2", "ci", "false"] {
            assert!(t.contains(text), "{text} missing from\n{t}");
        }
    }
}
