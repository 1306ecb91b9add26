//! `mast pack`: a directory of rendered manifests → the canonical bundle tar.
//!
//! The bundle file `mast pack` writes is the canonical tar itself ([`mast_protocol::bundle::build_tar`]):
//! its sha256 is the content's identity, the same on any machine, and every published form (`bundle.tar.gz`,
//! the chunk index) is derived from it by `mast release`. Nothing is written unless the whole directory
//! passes the checks an agent will make, and the ones only the packager can make:
//!
//! - every file is a regular file (or a symlink to one inside the directory) with a valid bundle path;
//!   hidden entries (`.git`, `.DS_Store`) are skipped;
//! - every file is a YAML or JSON manifest (`.yaml`, `.yml`, `.json`) whose documents are all Kubernetes
//!   objects, except one optional options file (`mast.toml`, `mast.yaml` or `mast.yml`) at the root;
//! - no object (group, kind, namespace, name) appears twice, in one file or across files;
//! - the tar stays within the agent's [`WalkLimits`], so a site never refuses what was signed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use mast_protocol::bundle::options::{BundleOptions, OPTIONS_FILES, OptionsError};
use mast_protocol::bundle::{
    BundleError, BundlePath, BundlePathError, IndexLimits, PathFault, WalkLimits, build_tar,
    gunzip_bounded, walk,
};
use mast_protocol::digest::Sha256Digest;
use mast_protocol::manifest::{ManifestError, ManifestLimits, ObjectId, identify};
use serde::Serialize;

use crate::progress::Progress;
use crate::{ExitStatus, exit, io_exit_code};

/// Why a directory or bundle was refused. Names the file, and for duplicates both files.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The input is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    /// A symlink that leads outside the directory being packed.
    #[error("{path}: symlink to {target}, outside {root}")]
    Outside {
        /// The link.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
        /// The directory being packed.
        root: PathBuf,
    },
    /// A symlink to a directory; only symlinks to files are followed, so a tree cannot loop.
    #[error("{0}: symlink to a directory; only symlinks to files are followed")]
    SymlinkedDirectory(PathBuf),
    /// A socket, FIFO or device.
    #[error("{0}: not a regular file")]
    SpecialFile(PathBuf),
    /// A path a bundle cannot carry (not UTF-8, too long, a control character).
    #[error("{path}: {source}")]
    Path {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: BundlePathError,
    },
    /// A file that is neither a manifest nor the options file.
    #[error(
        "{0}: not a manifest (.yaml, .yml or .json) nor a bundle options file (mast.toml, mast.yaml or mast.yml at the root)"
    )]
    Unsupported(String),
    /// A manifest file that is not UTF-8.
    #[error("{0}: not UTF-8")]
    NotUtf8(String),
    /// A manifest file whose YAML is not a set of Kubernetes objects.
    #[error("{file}: {source}")]
    Manifest {
        /// The file, as a bundle path.
        file: String,
        /// Why.
        #[source]
        source: ManifestError,
    },
    /// One object defined twice.
    #[error(
        "duplicate object {id}: {first} (document {first_document}) and {second} (document {second_document})"
    )]
    Duplicate {
        /// The object (`group/Kind namespace/name`).
        id: String,
        /// The first file that defines it.
        first: String,
        /// Its document there.
        first_document: usize,
        /// The second file that defines it.
        second: String,
        /// Its document there.
        second_document: usize,
    },
    /// More than one options file.
    #[error("{first} and {second}: a bundle has at most one options file")]
    TwoOptionsFiles {
        /// One.
        first: String,
        /// The other.
        second: String,
    },
    /// The options file does not parse.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// Nothing to pack.
    #[error("{0}: no manifests")]
    Empty(PathBuf),
    /// More files, or larger ones, than an agent accepts.
    #[error("{what}: {value} is over the agent's limit of {limit}")]
    Limit {
        /// What is counted (`files`, `bytes in all`, or a file).
        what: String,
        /// How many or how large.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A bundle file that is not a bundle (a bad tar or gzip), or a tar the canonical form cannot hold.
    #[error("{path}: {source}")]
    Bundle {
        /// The file.
        path: PathBuf,
        /// Why (boxed: the walker's errors are large and rare).
        #[source]
        source: Box<BundleError>,
    },
    /// `--out` inside the directory being packed would be packed into the next bundle.
    #[error("--out {out}: inside the directory being packed ({dir})")]
    OutputInside {
        /// The output path.
        out: PathBuf,
        /// The directory.
        dir: PathBuf,
    },
    /// The bundle could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// Why.
        #[source]
        source: mast_mirror::MirrorError,
    },
}

impl ExitStatus for PackError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Io { source, .. } => io_exit_code(source),
            Self::NotADirectory(_) => exit::NO_INPUT,
            Self::OutputInside { .. } => exit::USAGE,
            Self::Write { .. } => exit::IO,
            _ => exit::DATA,
        }
    }
}

/// One Kubernetes object of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectEntry {
    /// API group; empty for the core group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, if the manifest sets one.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The `apiVersion` written.
    pub api_version: String,
    /// The file, as a bundle path.
    pub file: String,
    /// The document in that file, from 1.
    pub document: usize,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Its bundle path.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many objects it defines (0 for the options file).
    pub objects: usize,
}

/// What a bundle holds, once every file passed.
#[derive(Debug, Clone, Default)]
pub struct BundleContent {
    /// Files in path order.
    pub files: Vec<FileEntry>,
    /// Objects in file then document order.
    pub objects: Vec<ObjectEntry>,
    /// The options file's name and contents, if the bundle has one.
    pub options: Option<(String, BundleOptions)>,
}

/// A checked bundle: the canonical tar and what it holds.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The canonical tar.
    pub tar: Vec<u8>,
    /// Its sha256: the bundle's identity.
    pub tar_sha256: Sha256Digest,
    /// Its files and objects.
    pub content: BundleContent,
}

/// What `mast pack` did.
#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    /// The bundle written.
    pub bundle: PathBuf,
    /// sha256 of the canonical tar.
    pub sha256: String,
    /// Its length.
    pub bytes: u64,
    /// Manifest and options files.
    pub files: usize,
    /// Kubernetes objects.
    pub objects: usize,
    /// The options file, if any.
    pub options_file: Option<String>,
}

/// Files read from a directory or a tar but not checked yet: the first half of packing, so that a caller
/// can compress the canonical tar while the manifests are being checked.
#[derive(Debug, Clone)]
pub struct Unchecked {
    origin: PathBuf,
    /// Sorted by path, as the canonical tar orders them.
    files: Vec<(BundlePath, Vec<u8>)>,
}

/// A file found in the directory: where it goes in the bundle and where to read it.
struct Source {
    path: BundlePath,
    file: PathBuf,
}

/// Packs `dir` and writes the canonical tar to `out` (atomically; only when every check passed).
pub fn pack(dir: &Path, out: &Path) -> Result<PackReport, PackError> {
    // `b.tar` has an empty parent, which the atomic write cannot fsync; name the current directory.
    let out = &match out.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new(".").join(out),
        _ => out.to_path_buf(),
    };
    refuse_output_inside(dir, out)?;
    let bundle = pack_dir(dir, true)?;
    mast_mirror::write_atomic(out, &bundle.tar).map_err(|source| PackError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(PackReport {
        bundle: out.to_path_buf(),
        sha256: bundle.tar_sha256.to_hex(),
        bytes: bundle.tar.len() as u64,
        files: bundle.content.files.len(),
        objects: bundle.content.objects.len(),
        options_file: bundle.content.options.map(|(name, _)| name),
    })
}

/// Reads and checks every file under `dir` and builds the canonical tar. `progress` asks for a bar on a
/// terminal.
pub fn pack_dir(dir: &Path, progress: bool) -> Result<Bundle, PackError> {
    Unchecked::open_dir(dir)?.into_bundle(progress)
}

/// Reads a bundle given to `release` or `inspect`: a canonical tar from `mast pack`, any tar or tar.gz of
/// manifests (re-written in canonical form), or a directory (packed). Runs every check `pack` runs.
pub fn read_bundle(path: &Path) -> Result<Bundle, PackError> {
    Unchecked::open(path)?.into_bundle(true)
}

impl Unchecked {
    /// Reads a directory of manifests, a tar or a tar.gz. Paths, file types, symlinks and the agent's
    /// size limits are checked here; the content by [`check`](Self::check).
    pub fn open(path: &Path) -> Result<Self, PackError> {
        let meta = std::fs::metadata(path).map_err(|source| PackError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            return Self::open_dir(path);
        }
        let limits = IndexLimits::default();
        let raw = read_capped(path, limits.max_tar_length)?;
        let bundle_err = |source| PackError::Bundle {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let tar = if raw.starts_with(&[0x1f, 0x8b]) {
            gunzip_bounded(&raw, limits.max_tar_length).map_err(bundle_err)?
        } else {
            raw
        };
        let entries = walk(&tar, &WalkLimits::default()).map_err(bundle_err)?;
        let mut files: Vec<(BundlePath, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| (entry.path, entry.data.to_vec()))
            .collect();
        // Sorted as the canonical tar is, so errors and listings come in the same order for a tar as for
        // the directory it was made from.
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Self::new(path, files)
    }

    /// Reads every file under `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self, PackError> {
        let sources = collect(dir)?;
        let limits = WalkLimits::default();
        if sources.len() as u64 > limits.max_entries {
            return Err(PackError::Limit {
                what: "files".to_owned(),
                value: sources.len() as u64,
                limit: limits.max_entries,
            });
        }
        let files = parallel(&sources, |source| {
            read_capped(&source.file, limits.max_entry_size).map(|data| (source.path.clone(), data))
        })
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        Self::new(dir, files)
    }

    fn new(origin: &Path, files: Vec<(BundlePath, Vec<u8>)>) -> Result<Self, PackError> {
        if files.is_empty() {
            return Err(PackError::Empty(origin.to_path_buf()));
        }
        let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
        let limit = WalkLimits::default().max_total_size;
        if total > limit {
            return Err(PackError::Limit {
                what: "bytes in all".to_owned(),
                value: total,
                limit,
            });
        }
        Ok(Self {
            origin: origin.to_path_buf(),
            files,
        })
    }

    /// The canonical tar of the files, checked with the agent's own walker and limits: the packager can
    /// never sign a bundle every site would refuse.
    pub fn tar(&self) -> Result<Vec<u8>, PackError> {
        let bundle_err = |source| PackError::Bundle {
            path: self.origin.clone(),
            source: Box::new(source),
        };
        let tar = build_tar(
            self.files
                .iter()
                .map(|(path, data)| (path.clone(), data.as_slice())),
        )
        .map_err(bundle_err)?;
        walk(&tar, &WalkLimits::default()).map_err(bundle_err)?;
        Ok(tar)
    }

    /// Checks every file's content (manifests, options file, duplicates) on all cores. `progress` asks
    /// for a bar on a terminal.
    pub fn check(&self, progress: bool) -> Result<BundleContent, PackError> {
        let bar = if progress {
            Progress::stderr(self.files.len() as u64, "checking")
        } else {
            Progress::hidden()
        };
        let checked = parallel(&self.files, |(path, data)| {
            let checked = check_file(path, data);
            bar.inc(1);
            checked
        });
        bar.finish();
        let checked = checked.into_iter().collect::<Result<Vec<_>, _>>()?;
        assemble(&self.files, checked)
    }

    /// Checks the content and, alongside, builds and hashes the tar. A content error is reported before a
    /// tar error, as if the two ran in turn.
    pub fn into_bundle(self, progress: bool) -> Result<Bundle, PackError> {
        let (content, tar) = std::thread::scope(|scope| {
            let builder = scope.spawn(|| self.tar().map(|tar| (Sha256Digest::of(&tar), tar)));
            let content = self.check(progress);
            match builder.join() {
                Ok(tar) => (content, tar),
                // Building a tar in memory only panics on a bug; carry it to the caller.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        let content = content?;
        let (tar_sha256, tar) = tar?;
        Ok(Bundle {
            tar_sha256,
            tar,
            content,
        })
    }
}

/// Every file under `root`, sorted by bundle path; hidden entries skipped, symlinks checked.
fn collect(root: &Path) -> Result<Vec<Source>, PackError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackError::Io { path, source }
    };
    let meta = std::fs::metadata(root).map_err(io(root))?;
    if !meta.is_dir() {
        return Err(PackError::NotADirectory(root.to_path_buf()));
    }
    let canonical_root = root.canonicalize().map_err(io(root))?;
    let mut out = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let file = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                let source = BundlePathError {
                    path: file.to_string_lossy().into_owned(),
                    fault: PathFault::NotUtf8,
                };
                return Err(PackError::Path { path: file, source });
            };
            if name.starts_with('.') {
                continue;
            }
            let relative = format!("{prefix}{name}");
            let kind = entry.file_type().map_err(io(&file))?;
            if kind.is_dir() {
                pending.push((file, format!("{relative}/")));
                continue;
            }
            if kind.is_symlink() {
                let target = file.canonicalize().map_err(io(&file))?;
                if !target.starts_with(&canonical_root) {
                    return Err(PackError::Outside {
                        path: file,
                        target,
                        root: root.to_path_buf(),
                    });
                }
                let meta = std::fs::metadata(&target).map_err(io(&file))?;
                if meta.is_dir() {
                    return Err(PackError::SymlinkedDirectory(file));
                }
                if !meta.is_file() {
                    return Err(PackError::SpecialFile(file));
                }
            } else if !kind.is_file() {
                return Err(PackError::SpecialFile(file));
            }
            let path =
                BundlePath::from_bytes(relative.as_bytes()).map_err(|source| PackError::Path {
                    path: file.clone(),
                    source,
                })?;
            out.push(Source { path, file });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A file's objects, or the options file's settings.
type Checked = (Vec<ObjectEntry>, Option<BundleOptions>);

/// Reads a file, refusing one longer than `limit` before reading it.
fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, PackError> {
    let io = |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > limit {
        return Err(PackError::Limit {
            what: path.display().to_string(),
            value: len,
            limit,
        });
    }
    std::fs::read(path).map_err(io)
}

/// Checks one file's content: a manifest's objects, or the options file's settings.
fn check_file(path: &BundlePath, data: &[u8]) -> Result<Checked, PackError> {
    let name = path.as_str();
    if OPTIONS_FILES.contains(&name) {
        let options = BundleOptions::parse(name, data)?;
        return Ok((Vec::new(), Some(options)));
    }
    let is_manifest = [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| name.ends_with(ext));
    if !is_manifest {
        return Err(PackError::Unsupported(name.to_owned()));
    }
    let text = std::str::from_utf8(data).map_err(|_| PackError::NotUtf8(name.to_owned()))?;
    // Identity only: the same parser, budgets and refusals as the agent's `split`, without building values.
    let objects =
        identify(text, &ManifestLimits::default()).map_err(|source| PackError::Manifest {
            file: name.to_owned(),
            source,
        })?;
    let objects = objects
        .into_iter()
        .map(|o| ObjectEntry {
            group: o.id.group,
            kind: o.id.kind,
            namespace: o.id.namespace,
            name: o.id.name,
            api_version: o.api_version,
            file: name.to_owned(),
            document: o.document,
        })
        .collect();
    Ok((objects, None))
}

/// Puts checked files together, refusing duplicate objects and a second options file.
fn assemble(
    files: &[(BundlePath, Vec<u8>)],
    checked: Vec<Checked>,
) -> Result<BundleContent, PackError> {
    let mut content = BundleContent::default();
    let mut seen: BTreeMap<ObjectId, (String, usize)> = BTreeMap::new();
    for ((path, data), (objects, options)) in files.iter().zip(checked) {
        if let Some(options) = options {
            if let Some((first, _)) = &content.options {
                return Err(PackError::TwoOptionsFiles {
                    first: first.clone(),
                    second: path.as_str().to_owned(),
                });
            }
            content.options = Some((path.as_str().to_owned(), options));
        }
        content.files.push(FileEntry {
            path: path.as_str().to_owned(),
            bytes: data.len() as u64,
            objects: objects.len(),
        });
        for object in objects {
            let id = ObjectId {
                group: object.group.clone(),
                kind: object.kind.clone(),
                namespace: object.namespace.clone(),
                name: object.name.clone(),
            };
            if let Some((first, first_document)) = seen.get(&id) {
                return Err(PackError::Duplicate {
                    id: id.to_string(),
                    first: first.clone(),
                    first_document: *first_document,
                    second: object.file,
                    second_document: object.document,
                });
            }
            seen.insert(id, (object.file.clone(), object.document));
            content.objects.push(object);
        }
    }
    Ok(content)
}

/// Runs `work` on every item over the machine's cores; results come back in item order.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R, PackError> + Sync,
) -> Vec<Result<R, PackError>> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(items.len().max(1));
    if threads <= 1 {
        return items.iter().map(&work).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| scope.spawn(|| part.iter().map(&work).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                // A worker only panics on a bug; carry the panic to the caller rather than hide it.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Refuses `--out` inside `dir`, where the next `pack` of the same directory would pick it up.
fn refuse_output_inside(dir: &Path, out: &Path) -> Result<(), PackError> {
    let Ok(dir_abs) = dir.canonicalize() else {
        // A missing directory is reported by the walk with its own message.
        return Ok(());
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(parent_abs) = parent.canonicalize()
        && parent_abs.starts_with(&dir_abs)
    {
        return Err(PackError::OutputInside {
            out: out.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

impl fmt::Display for PackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bundle   {}", self.bundle.display())?;
        writeln!(f, "sha256   {}", self.sha256)?;
        writeln!(f, "size     {} bytes", self.bytes)?;
        write!(f, "content  {} files, {} objects", self.files, self.objects)?;
        if let Some(options) = &self.options_file {
            write!(f, ", options from {options}")?;
        }
        Ok(())
    }
}
