//! A mirror as the metrics see it: every read counted by mirror kind, file kind and status class, every
//! "not modified" answer counted, and every body byte read counted under the same mirror and file kind,
//! without the mirror transports knowing about metrics.
//!
//! One object read is one count, whatever it took on the wire: an OCI metadata read is a manifest and a
//! blob request, a resumed read after a 416 two requests. The status class is that of the answer the
//! read opened with; a body cut part-way is still the `2xx` it started as (its failure shows in the
//! pass's skipped mirrors). Bytes are those of the object's body as the reader reads it, counted piece
//! by piece (a long download shows in a scrape while it runs): a body the reader leaves part-way counts
//! only what it read, and what a transport reads to find the object (an OCI manifest) is not counted.

use mast_mirror::{Conditions, Fetched, Mirror, MirrorError, MirrorRead, ObjectPath, Response};

use crate::telemetry::{FileKind, Metrics, MirrorKind, StatusClass};

/// A [`Mirror`] whose reads are counted in [`Metrics`].
pub struct Observed<'a> {
    mirror: &'a Mirror,
    kind: MirrorKind,
    metrics: &'a Metrics,
}

impl<'a> Observed<'a> {
    /// Counts `mirror`'s reads in `metrics`.
    pub fn new(mirror: &'a Mirror, metrics: &'a Metrics) -> Self {
        Self {
            mirror,
            kind: mirror_kind(mirror),
            metrics,
        }
    }

    /// The transport this mirror is reached through.
    pub fn kind(&self) -> MirrorKind {
        self.kind
    }

    fn record(&self, object: &ObjectPath, status: StatusClass) {
        self.metrics
            .record_request(self.kind, file_kind(object), status);
    }

    /// `response`, with every body byte read counted under this mirror and `object`'s kind.
    fn counted(&self, object: &ObjectPath, response: Response) -> Response {
        let received = self
            .metrics
            .received_bytes_counter(self.kind, file_kind(object));
        response.tap(move |n| {
            received.inc_by(n);
        })
    }
}

impl MirrorRead for Observed<'_> {
    async fn get(&self, object: &ObjectPath, max_length: u64) -> Result<Response, MirrorError> {
        let result = self.mirror.get(object, max_length).await;
        let status = match &result {
            Ok(_) => StatusClass::Success,
            Err(e) => status_class(e),
        };
        self.record(object, status);
        result.map(|response| self.counted(object, response))
    }

    async fn get_with(
        &self,
        object: &ObjectPath,
        max_length: u64,
        conditions: &Conditions,
    ) -> Result<Fetched, MirrorError> {
        let result = self.mirror.get_with(object, max_length, conditions).await;
        let status = match &result {
            Ok(Fetched::NotModified { .. }) => {
                self.metrics.record_not_modified(self.kind);
                StatusClass::Redirection
            }
            Ok(Fetched::Full(_) | Fetched::Partial { .. }) => StatusClass::Success,
            Err(e) => status_class(e),
        };
        self.record(object, status);
        result.map(|fetched| match fetched {
            Fetched::Full(response) => Fetched::Full(self.counted(object, response)),
            Fetched::Partial {
                from,
                total,
                response,
            } => Fetched::Partial {
                from,
                total,
                response: self.counted(object, response),
            },
            not_modified @ Fetched::NotModified { .. } => not_modified,
        })
    }

    fn describe(&self) -> String {
        self.mirror.describe()
    }
}

/// The transport of a mirror.
pub fn mirror_kind(mirror: &Mirror) -> MirrorKind {
    match mirror {
        Mirror::Dir(_) => MirrorKind::File,
        Mirror::Http(_) => MirrorKind::Http,
        Mirror::Oci(_) => MirrorKind::Oci,
    }
}

fn file_kind(object: &ObjectPath) -> FileKind {
    match object {
        ObjectPath::Metadata(_) => FileKind::Metadata,
        ObjectPath::Target { .. } => FileKind::Target,
        ObjectPath::Chunk(_) => FileKind::Chunk,
    }
}

/// The status class a failed read answered with. A missing object is a `4xx` on every mirror kind (a
/// directory's missing file included); an answer the reader refused (too long, malformed) still came
/// with a success status; a read that got no answer at all is a transport error.
fn status_class(error: &MirrorError) -> StatusClass {
    match error {
        MirrorError::Status { status, .. } => StatusClass::from_code(*status),
        MirrorError::NotFound { .. } => StatusClass::ClientError,
        MirrorError::TooLarge { .. } | MirrorError::Protocol { .. } => StatusClass::Success,
        MirrorError::Http { source, .. } => {
            source.status().map_or(StatusClass::TransportError, |s| {
                StatusClass::from_code(s.as_u16())
            })
        }
        _ => StatusClass::TransportError,
    }
}
