//! Output for humans (aligned tables) and for programs (the API's JSON).
//! Writes ignore a closed pipe (`bursar ... | head` must not panic).

use super::CliError;
use std::io::Write;

/// Writes `s` and a newline to stdout.
pub fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Writes `s` and a newline to stderr.
pub fn err_line(s: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(s.as_bytes());
    let _ = err.write_all(b"\n");
}

/// Prints a JSON body as the API sent it, pretty-printed.
pub fn json_body(body: &str) -> Result<(), CliError> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| CliError::Other(format!("the server sent invalid JSON: {e}")))?;
    json_value(&v);
    Ok(())
}

pub fn json_value(v: &serde_json::Value) {
    line(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// A table with a header row; numeric-looking columns are right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        let mut numeric = vec![true; n];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                width[i] = width[i].max(cell.chars().count());
                if !cell.is_empty() && !cell.bytes().all(|b| b.is_ascii_digit()) {
                    numeric[i] = false;
                }
            }
        }
        let mut out = String::new();
        let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
            let mut line = String::new();
            for (i, cell) in cells.enumerate().take(n) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width[i].saturating_sub(cell.chars().count());
                if numeric[i] && !self.rows.is_empty() {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        };
        push_row(&mut self.headers.iter().copied());
        for row in &self.rows {
            push_row(&mut row.iter().map(String::as_str));
        }
        out
    }

    pub fn print(&self) {
        let s = self.render();
        line(s.trim_end_matches('\n'));
    }
}

/// One record as aligned `name  value` lines.
pub fn record(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    line(out.trim_end_matches('\n'));
}

/// Flags as `a,b` or `-`.
pub fn flags(names: &[String]) -> String {
    if names.is_empty() { "-".into() } else { names.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["id", "asset", "amount"]);
        t.row(vec!["1".into(), "USD".into(), "100".into()]);
        t.row(vec!["22".into(), "EURO".into(), "5".into()]);
        assert_eq!(t.render(), "id  asset  amount\n 1  USD       100\n22  EURO        5\n");
        let empty = Table::new(&["id", "name"]);
        assert_eq!(empty.render(), "id  name\n");
    }
}
