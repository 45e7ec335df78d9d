//! Bearer tokens, shared by the coordinator's server and
//! [`participant_router`](crate::participant_router): what a valid token
//! looks like, how a request presents one, and a comparison whose time
//! does not depend on where a guess goes wrong.

#[cfg(any(feature = "participant-service", feature = "server"))]
pub(crate) use checking::{check_bearer, Check};

/// Whether `token` may be a bearer token: non-empty visible ASCII (so it
/// fits in a header and cannot smuggle whitespace or control characters).
pub(crate) fn is_valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(any(feature = "participant-service", feature = "server"))]
mod checking {
    use axum::http::{header, HeaderMap};

    /// How a request's credentials compare with the expected token.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Check {
        /// `Authorization: Bearer <the token>`.
        Valid,
        /// A bearer token, but not the expected one.
        Wrong,
        /// No `Authorization: Bearer …` header.
        Missing,
    }

    impl Check {
        /// What to tell a refused client (never the expected token).
        pub(crate) fn message(self) -> &'static str {
            match self {
                Self::Valid => "authenticated",
                Self::Wrong => "the bearer token is wrong",
                Self::Missing => "an Authorization: Bearer <token> header is required",
            }
        }
    }

    /// Checks `headers` for `Authorization: Bearer <expected>` (the scheme in
    /// any case), comparing in constant time.
    pub(crate) fn check_bearer(headers: &HeaderMap, expected: &str) -> Check {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Check::Valid,
            Some(_) => Check::Wrong,
            None => Check::Missing,
        }
    }

    /// Compares without stopping at the first difference, so the time taken
    /// does not reveal how much of a guess was right (only the length can
    /// leak).
    pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(difference) == 0
    }
}

#[cfg(all(test, any(feature = "participant-service", feature = "server")))]
mod tests {
    use super::checking::constant_time_eq;
    use super::*;
    use axum::http::{header, HeaderMap, HeaderValue};

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn only_a_bearer_header_with_the_token_is_valid() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(check_bearer(&with("Bearer s3cret"), "s3cret"), Check::Valid);
        assert_eq!(check_bearer(&with("bearer s3cret"), "s3cret"), Check::Valid);
        assert_eq!(check_bearer(&with("Bearer s3creT"), "s3cret"), Check::Wrong);
        assert_eq!(
            check_bearer(&with("Basic s3cret"), "s3cret"),
            Check::Missing
        );
        assert_eq!(check_bearer(&with("s3cret"), "s3cret"), Check::Missing);
        assert_eq!(check_bearer(&HeaderMap::new(), "s3cret"), Check::Missing);
    }

    #[test]
    fn tokens_are_non_empty_visible_ascii() {
        assert!(is_valid_token("a-B_c.9~+/="));
        for bad in ["", "two words", "tab\t", "é", "line\n"] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
    }
}
