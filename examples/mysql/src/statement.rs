//! Whether a statement may change session state, read from its text without I/O.
//!
//! The server tells a client whether a transaction is open (the status flags of every OK
//! packet), but it tells `mysql_async` nothing about session variables, user variables,
//! temporary tables, named locks or the current schema: that needs the session-tracking
//! capability, which `mysql_async` does not ask for. So [`MysqlConn`](crate::MysqlConn) reads
//! each statement it sends with [`may_change_session`] and remembers a yes until the next
//! reset.
//!
//! The test errs towards yes: a false yes costs one `COM_RESET_CONNECTION` when the
//! connection comes back; a false no hands the next caller someone else's session. A
//! statement the test cannot see into (a stored procedure that runs `SET`) is covered by
//! [`MysqlConn::mark_session_changed`](crate::MysqlConn::mark_session_changed).

/// Leading keywords of statements that change the session (or may: `CALL`, `EXECUTE`).
const SESSION_KEYWORDS: &[&str] = &[
    "SET",        // session and user variables, autocommit, names, the next isolation level
    "USE",        // the current schema
    "LOCK",       // table locks held by the session
    "PREPARE",    // server-side prepared statements
    "EXECUTE",    // a prepared statement: anything
    "DEALLOCATE", // prepared statements
    "HANDLER",    // open table handlers
    "XA",         // XA transactions, which the status flags do not report
    "CALL",       // a stored procedure: anything
    "DECLARE",
];

/// Whether `sql` (one or more statements, `;`-separated) may change the state of the session
/// it runs on: a leading keyword (`SET`, `USE`, `LOCK`, `PREPARE`, `CALL`, ...), `CREATE
/// TEMPORARY` / `DROP TEMPORARY`, a user variable (`@name`, outside quotes; `@@` system
/// variable reads are not), or `GET_LOCK(`. Transactions are not its business: the server
/// reports those.
pub fn may_change_session(sql: &str) -> bool {
    let mut statement = Statement::default();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                statement.end_word();
                skip_quoted(&mut chars, c);
            }
            '#' => {
                statement.end_word();
                skip_line(&mut chars);
            }
            '-' if chars.peek() == Some(&'-') => {
                statement.end_word();
                skip_line(&mut chars);
            }
            '/' if chars.peek() == Some(&'*') => {
                statement.end_word();
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '@' if chars.peek() == Some(&'@') => {
                // A system variable read (`@@version`); setting one starts with SET.
                statement.end_word();
                chars.next();
            }
            '@' => return true,
            ';' => {
                if statement.changes_session() {
                    return true;
                }
                statement = Statement::default();
            }
            '(' => {
                statement.end_word();
                if statement.last.eq_ignore_ascii_case("GET_LOCK") {
                    return true;
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => statement.word.push(c),
            _ => statement.end_word(),
        }
    }
    statement.changes_session()
}

/// The words of the statement being read, as far as the test needs them.
#[derive(Default)]
struct Statement {
    /// Its first two words, upper-cased.
    first: Vec<String>,
    /// The word being read.
    word: String,
    /// The last word read.
    last: String,
}

impl Statement {
    fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        if self.first.len() < 2 {
            self.first.push(self.word.to_ascii_uppercase());
        }
        self.last = std::mem::take(&mut self.word);
    }

    fn changes_session(&mut self) -> bool {
        self.end_word();
        match self.first.as_slice() {
            [first, ..] if SESSION_KEYWORDS.contains(&first.as_str()) => true,
            [first, second, ..] => (first == "CREATE" || first == "DROP") && second == "TEMPORARY",
            _ => false,
        }
    }
}

/// Skips past the closing `quote` (a doubled quote or a backslash escapes one).
fn skip_quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, quote: char) {
    while let Some(c) = chars.next() {
        if c == '\\' && quote != '`' {
            chars.next();
        } else if c == quote {
            if chars.peek() == Some(&quote) {
                chars.next();
            } else {
                return;
            }
        }
    }
}

/// Skips to the end of the line (a `#` or `-- ` comment).
fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if c == '\n' {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::may_change_session;

    #[test]
    fn plain_statements_and_transactions_leave_the_session_alone() {
        for sql in [
            "SELECT 1",
            "select id, balance from accounts where id = ? for update",
            "UPDATE accounts SET balance = ? WHERE id = ?",
            "START TRANSACTION",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SELECT @@version, @@session.sql_mode",
            "INSERT INTO t VALUES ('user@example.com', \"a@b\", `odd@name`)",
            "SELECT 'it''s @x' -- @y\n",
            "SELECT 1 # @z",
            "SELECT /* @w */ 1",
            "CREATE TABLE t (id INT)",
            "DROP TABLE t",
            "SELECT offset FROM settings",
        ] {
            assert!(!may_change_session(sql), "{sql}");
        }
    }

    #[test]
    fn session_changes_are_seen() {
        for sql in [
            "SET @x = 1",
            "set session sql_mode = ''",
            "SET autocommit = 0",
            "  /* hint */ SET NAMES utf8mb4",
            "SELECT @x := 1",
            "SELECT balance INTO @b FROM accounts WHERE id = 1",
            "USE other",
            "LOCK TABLES accounts WRITE",
            "CREATE TEMPORARY TABLE t (id INT)",
            "drop temporary table t",
            "SELECT GET_LOCK('name', 1)",
            "select get_lock ('name', 1)",
            "CALL proc()",
            "PREPARE s FROM 'SELECT 1'",
            "SELECT 1; SET sql_mode = ''",
            "SELECT 1;SET sql_mode = ''",
            "XA START 'x'",
        ] {
            assert!(may_change_session(sql), "{sql}");
        }
    }
}
