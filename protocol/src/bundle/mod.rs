//! Bundles: the canonical tar of a release's manifests, its chunk index, and the safe walker that reads it.
