//! Why one object held whole or streamed (a chunk, a first install's bundle) was not fetched from one
//! mirror.

use mast_mirror::{ErrorKind, MirrorError, MirrorRead, ObjectPath};

use crate::telemetry::VerificationFailure;

/// Why an object was not fetched. Both variants name the object and the mirror; neither leaves an
/// unverified byte behind.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The mirror could not be read (down, missing the object, an unexpected answer, a cut body).
    #[error("{object} from {mirror}: {source}")]
    Mirror {
        /// The object's path on the mirror.
        object: String,
        /// The mirror.
        mirror: String,
        /// What the mirror transport said.
        #[source]
        source: MirrorError,
    },
    /// The bytes are not the ones the signed metadata names; they were dropped.
    #[error("{object} from {mirror}: {reason}")]
    Refused {
        /// The object's path on the mirror.
        object: String,
        /// The mirror.
        mirror: String,
        /// Which check failed, for metrics.
        failure: VerificationFailure,
        /// What differed.
        reason: String,
    },
}

impl ObjectError {
    /// A read of `object` that failed: a body running past the signed `length` is the mirror serving
    /// other bytes (`too_long`), anything else is the link's or the mirror's trouble.
    pub(crate) fn read(
        object: String,
        mirror: String,
        source: MirrorError,
        length: u64,
        too_long: VerificationFailure,
    ) -> Self {
        if source.kind() == ErrorKind::TooLarge {
            let reason = format!("longer than the signed {length} bytes");
            return Self::Refused {
                object,
                mirror,
                failure: too_long,
                reason,
            };
        }
        Self::Mirror {
            object,
            mirror,
            source,
        }
    }

    /// [`Self::read`] for `object` from `mirror`, as a function for `map_err`.
    pub(crate) fn reading<'a>(
        object: &'a ObjectPath,
        mirror: &'a impl MirrorRead,
        length: u64,
        too_long: VerificationFailure,
    ) -> impl Fn(MirrorError) -> Self + Copy + 'a {
        move |source| {
            Self::read(
                object.as_path(),
                mirror.describe(),
                source,
                length,
                too_long,
            )
        }
    }

    /// Bytes `mirror` served as `object` that failed the check `failure`, for `reason`.
    pub(crate) fn refused(
        object: &ObjectPath,
        mirror: &impl MirrorRead,
        failure: VerificationFailure,
        reason: &dyn std::fmt::Display,
    ) -> Self {
        Self::Refused {
            object: object.as_path(),
            mirror: mirror.describe(),
            failure,
            reason: reason.to_string(),
        }
    }

    /// The verification failure, when the mirror served bytes that are not the signed ones: a mirror to
    /// skip, not a link to retry.
    pub fn verification_failure(&self) -> Option<VerificationFailure> {
        match self {
            Self::Refused { failure, .. } => Some(*failure),
            Self::Mirror { .. } => None,
        }
    }

    /// The mirror's `Retry-After`, when it refused the request with one.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            Self::Mirror { source, .. } => source.retry_after(),
            Self::Refused { .. } => None,
        }
    }
}
