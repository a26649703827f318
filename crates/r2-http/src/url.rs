//! The check and normalisation of a base URL that a client appends an endpoint's path to.

/// How [`endpoint_url`] turns a base URL into the URL requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint<'a> {
    /// Endings that already name the endpoint (e.g. `/v1/embeddings`, then `/v1`): the first one
    /// the base ends with (after trailing `/` are dropped) is removed, so that it is not doubled.
    pub known_suffixes: &'a [&'a str],
    /// What is appended to the base, after trailing `/` are dropped: the endpoint's path
    /// (`/chat/completions`), or `/` for a folder that file paths are appended to.
    pub path: &'a str,
    /// Whether a user name or password in the URL is an error ([`UrlProblem::Credentials`]);
    /// otherwise they are kept.
    pub reject_credentials: bool,
}

/// Why a base URL is not usable; each client words its own error from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    /// Not a URL at all; the parser's reason.
    Unparsable(String),
    /// It holds a user name or password; `without` is the URL with them removed, safe to show.
    Credentials { without: String },
    /// Not `http` or `https`.
    NotHttp,
    /// No host.
    NoHost,
    /// It has a query or a fragment, which the path cannot follow.
    QueryOrFragment,
}

/// `base` (surrounding whitespace and trailing `/` dropped, then one of
/// [`Endpoint::known_suffixes`]) followed by [`Endpoint::path`], checked to be an `http(s)` URL
/// with a host and without query or fragment (and without credentials, when asked), in the
/// parser's normal form. The checks come in the order of [`UrlProblem`]'s variants.
pub fn endpoint_url(base: &str, endpoint: &Endpoint<'_>) -> Result<String, UrlProblem> {
    let trimmed = base.trim().trim_end_matches('/');
    let trimmed = endpoint
        .known_suffixes
        .iter()
        .find_map(|suffix| trimmed.strip_suffix(suffix))
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    let url = format!("{trimmed}{}", endpoint.path);
    let mut parsed =
        reqwest::Url::parse(&url).map_err(|e| UrlProblem::Unparsable(e.to_string()))?;
    if endpoint.reject_credentials && (!parsed.username().is_empty() || parsed.password().is_some())
    {
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        return Err(UrlProblem::Credentials {
            without: parsed.into(),
        });
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlProblem::NotHttp);
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlProblem::NoHost);
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(UrlProblem::QueryOrFragment);
    }
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: Endpoint<'static> = Endpoint {
        known_suffixes: &["/chat/completions"],
        path: "/chat/completions",
        reject_credentials: true,
    };

    const FOLDER: Endpoint<'static> = Endpoint {
        known_suffixes: &[],
        path: "/",
        reject_credentials: false,
    };

    #[test]
    fn suffixes_and_slashes_are_not_doubled() {
        for base in [
            "https://h/api/v1",
            " https://h/api/v1// ",
            "https://h/api/v1/chat/completions/",
        ] {
            assert_eq!(
                endpoint_url(base, &CHAT).unwrap(),
                "https://h/api/v1/chat/completions"
            );
        }
        let embeddings = Endpoint {
            known_suffixes: &["/v1/embeddings", "/v1"],
            path: "/v1/embeddings",
            reject_credentials: false,
        };
        for base in [
            "http://h:8000",
            "http://h:8000/v1/",
            "http://h:8000/v1/embeddings",
        ] {
            assert_eq!(
                endpoint_url(base, &embeddings).unwrap(),
                "http://h:8000/v1/embeddings"
            );
        }
        assert_eq!(
            endpoint_url("http://h/x//", &FOLDER).unwrap(),
            "http://h/x/"
        );
        assert_eq!(endpoint_url(" http://h ", &FOLDER).unwrap(), "http://h/");
    }

    #[test]
    fn every_problem_is_named() {
        assert!(matches!(
            endpoint_url("h/x", &FOLDER),
            Err(UrlProblem::Unparsable(_))
        ));
        assert!(matches!(
            endpoint_url("", &FOLDER),
            Err(UrlProblem::Unparsable(_))
        ));
        assert_eq!(endpoint_url("ftp://h/x", &FOLDER), Err(UrlProblem::NotHttp));
        assert_eq!(
            endpoint_url("http://h/x?y=1", &FOLDER),
            Err(UrlProblem::QueryOrFragment)
        );
        assert_eq!(
            endpoint_url("http://h/x#f", &CHAT),
            Err(UrlProblem::QueryOrFragment)
        );
        assert_eq!(
            endpoint_url("https://user:sk-secret@h/v1", &CHAT),
            Err(UrlProblem::Credentials {
                without: "https://h/v1/chat/completions".to_owned()
            })
        );
        // Credentials are kept when they are not rejected.
        assert_eq!(
            endpoint_url("https://user:pw@h/x", &FOLDER).unwrap(),
            "https://user:pw@h/x/"
        );
    }
}
