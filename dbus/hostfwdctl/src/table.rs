//! Aligned text tables and `Key: value` blocks for the human output.

/// A table with a header row; cells may span several lines (the other
/// cells of the row stay empty on the continuation lines).
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), right: vec![false; headers.len()], rows: Vec::new() }
    }

    /// Right-aligns column `col` (numbers).
    pub fn right(mut self, col: usize) -> Table {
        if let Some(r) = self.right.get_mut(col) {
            *r = true;
        }
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                for line in cell.lines() {
                    width[i] = width[i].max(line.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        self.line(&mut out, &width, &header.iter().map(String::as_str).collect::<Vec<_>>());
        for row in &self.rows {
            let split: Vec<Vec<&str>> = (0..n).map(|i| row.get(i).map(|c| c.lines().collect()).unwrap_or_default()).collect();
            let height = split.iter().map(Vec::len).max().unwrap_or(0).max(1);
            for k in 0..height {
                let cells: Vec<&str> = split.iter().map(|lines| lines.get(k).copied().unwrap_or("")).collect();
                self.line(&mut out, &width, &cells);
            }
        }
        out
    }

    fn line(&self, out: &mut String, width: &[usize], cells: &[&str]) {
        let mut line = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width[i].saturating_sub(cell.chars().count());
            if self.right[i] {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i != last {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `Key: value` lines with the values aligned; a multi-line value continues
/// under its first line.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in pairs {
        let mut lines = v.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(format!("{:<w$} {first}", format!("{k}:")).trim_end());
        out.push('\n');
        for more in lines {
            out.push_str(&format!("{:w$} {more}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_multiline_cells_continue() {
        let mut t = Table::new(&["NAME", "COUNT", "REASON"]).right(1);
        t.row(vec!["eth0".into(), "7".into(), "a".into()]);
        t.row(vec!["bond0.1000".into(), "1234".into(), "first\nsecond".into()]);
        assert_eq!(
            t.render(),
            "NAME        COUNT  REASON\n\
             eth0            7  a\n\
             bond0.1000   1234  first\n\
             \x20                  second\n"
        );
    }

    #[test]
    fn fields_align() {
        let s = fields(&[("State", "enforcing".into()), ("PolicyRevision", "3\nmore".into()), ("X", String::new())]);
        assert_eq!(s, "State:          enforcing\nPolicyRevision: 3\n                more\nX:\n");
    }
}
