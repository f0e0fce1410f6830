//! Whose comment is the sticky one. Anyone can post a comment that carries
//! probegate's marker, so a comment counts as probegate's only when the
//! token's own account wrote it: otherwise probegate would edit (and so
//! vouch for) a stranger's text, or leave its real report hidden behind a
//! forged one.
//!
//! Who the token is: an installation token (a GitHub App's, Actions'
//! GITHUB_TOKEN included) writes as `<app-slug>[bot]`, and only an app can
//! create or update check runs, so the check run's `app.slug` names it. A
//! user's token (a PAT) can read `GET /user`, which answers an installation
//! token 403 ("Resource not accessible by integration"; `GET /app` needs
//! the app's JWT). When neither tells, the caller names the account
//! (`--comment-author`) or nothing is edited.

use octocrab::Octocrab;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where `--comment-author` can also come from.
pub const AUTHOR_ENV: &str = "PROBEGATE_COMMENT_AUTHOR";

/// The account Actions' GITHUB_TOKEN comments as.
pub const ACTIONS_BOT: &str = "github-actions[bot]";

/// A comment that carried the marker but was left alone: someone else wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredComment {
    pub id: u64,
    /// Its author's login (`ghost` for a deleted account).
    pub author: String,
}

/// One listed comment: only what deciding ownership needs.
#[derive(Debug, Deserialize)]
pub(super) struct Listed {
    pub id: u64,
    pub body: Option<String>,
    /// GitHub sends `null` for some deleted accounts.
    pub user: Option<User>,
}

#[derive(Debug, Deserialize)]
pub(super) struct User {
    pub login: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// A check run as GitHub answers it: the app it belongs to is the token's.
#[derive(Debug, Deserialize)]
pub(super) struct RunReply {
    pub id: u64,
    pub app: Option<App>,
}

#[derive(Debug, Deserialize)]
pub(super) struct App {
    pub slug: String,
}

/// The login an app's installation token writes as.
pub(super) fn bot_login(slug: &str) -> String {
    format!("{slug}[bot]")
}

/// `--comment-author`: a GitHub login, or an app's `<slug>[bot]`.
pub fn validate_author(login: &str) -> Result<()> {
    let name = login.strip_suffix("[bot]").unwrap_or(login);
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "--comment-author `{login}`: not a GitHub login (a user's name, or an app's \
             `<slug>[bot]` such as {ACTIONS_BOT})"
        )))
    }
}

/// Whether `c` was written by `author`. Logins compare without case, as
/// GitHub treats them; a bot's must also come from a bot account.
pub(super) fn written_by(c: &Listed, author: &str) -> bool {
    c.user.as_ref().is_some_and(|u| {
        u.login.eq_ignore_ascii_case(author) && (!author.ends_with("[bot]") || u.kind == "Bot")
    })
}

/// The token's own login from `GET /user`; fails closed, with the way out,
/// when the token is no user's (an installation token) or the call fails.
pub(super) async fn user_login(octo: &Octocrab) -> Result<String> {
    #[derive(Deserialize)]
    struct Me {
        login: String,
    }
    match octo.get::<Me, _, ()>("/user", None).await {
        Ok(me) => Ok(me.login),
        Err(e) => {
            let why = match &e {
                octocrab::Error::GitHub { source, .. } => {
                    format!("HTTP {}: {}", source.status_code, source.message)
                }
                other => other.to_string(),
            };
            Err(Error::Usage(format!(
                "cannot tell which account this token comments as, so its sticky comment \
                 cannot be told from someone else's (GET /user: {why}; an installation \
                 token such as Actions' GITHUB_TOKEN cannot read it, and no check run named \
                 its app). Pass --comment-author (or {AUTHOR_ENV}): {ACTIONS_BOT} for \
                 GITHUB_TOKEN, <app-slug>[bot] for another app's token"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(login: &str, kind: &str) -> Listed {
        Listed {
            id: 1,
            body: None,
            user: Some(User {
                login: login.into(),
                kind: kind.into(),
            }),
        }
    }

    #[test]
    fn ownership_is_by_login_and_account_kind() {
        assert!(written_by(&listed("Alice", "User"), "alice"));
        assert!(!written_by(&listed("mallory", "User"), "alice"));
        assert!(written_by(&listed(ACTIONS_BOT, "Bot"), ACTIONS_BOT));
        assert!(!written_by(&listed(ACTIONS_BOT, "User"), ACTIONS_BOT));
        let ghost = Listed {
            id: 2,
            body: None,
            user: None,
        };
        assert!(!written_by(&ghost, "alice"));
    }

    #[test]
    fn authors_are_logins() {
        for ok in ["alice", "a-b", ACTIONS_BOT, "my-app[bot]"] {
            assert!(validate_author(ok).is_ok(), "{ok}");
        }
        for bad in ["", "[bot]", "-x", "a b", "a/b", "x[bot][bot]"] {
            assert!(validate_author(bad).is_err(), "{bad}");
        }
    }
}
