//! NCCL's parameters, read from its parameter registry (NCCL 2.30.4+): the
//! `NCCL_*` settings with the type NCCL declares each with and the value it
//! uses. [`Params`] has the details; `params()`, `param()` and
//! `Param::read` exist when the header declares the registry's API.

use std::fmt;

use crate::base::error::{Error, Result};

/// The type NCCL declares a parameter with, as its C API tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamType {
    /// `int8_t`.
    I8,
    /// `int16_t`.
    I16,
    /// `int32_t`.
    I32,
    /// `int64_t`.
    I64,
    /// `uint8_t`.
    U8,
    /// `uint16_t`.
    U16,
    /// `uint32_t`.
    U32,
    /// `uint64_t`.
    U64,
    /// `const char*` (text; empty when unset).
    Str,
    /// A `bool`, an enum or another type that NCCL's C API has no typed
    /// getter for: its bytes and its text only.
    Untyped,
}

impl ParamType {
    /// A short name: `i32`, `string`, `untyped`.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::I8 => "i8",
            ParamType::I16 => "i16",
            ParamType::I32 => "i32",
            ParamType::I64 => "i64",
            ParamType::U8 => "u8",
            ParamType::U16 => "u16",
            ParamType::U32 => "u32",
            ParamType::U64 => "u64",
            ParamType::Str => "string",
            ParamType::Untyped => "untyped",
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A parameter's value, in the type NCCL declares it with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamValue {
    /// `int8_t`.
    I8(i8),
    /// `int16_t`.
    I16(i16),
    /// `int32_t`.
    I32(i32),
    /// `int64_t`.
    I64(i64),
    /// `uint8_t`.
    U8(u8),
    /// `uint16_t`.
    U16(u16),
    /// `uint32_t`.
    U32(u32),
    /// `uint64_t`.
    U64(u64),
    /// `const char*`.
    Str(String),
    /// The value's bytes as NCCL stores it (`ncclParamGet`): one byte for a
    /// `bool`, the enum's size for an enum; empty for a value over 1 MiB,
    /// which is not read (its text is still in [`Param::text`]).
    Untyped(Vec<u8>),
}

impl ParamValue {
    /// The type of the value.
    pub fn param_type(&self) -> ParamType {
        match self {
            ParamValue::I8(_) => ParamType::I8,
            ParamValue::I16(_) => ParamType::I16,
            ParamValue::I32(_) => ParamType::I32,
            ParamValue::I64(_) => ParamType::I64,
            ParamValue::U8(_) => ParamType::U8,
            ParamValue::U16(_) => ParamType::U16,
            ParamValue::U32(_) => ParamType::U32,
            ParamValue::U64(_) => ParamType::U64,
            ParamValue::Str(_) => ParamType::Str,
            ParamValue::Untyped(_) => ParamType::Untyped,
        }
    }

    /// An integer value as `i128` (every NCCL integer type fits); `None`
    /// for text and untyped values.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            ParamValue::I8(v) => v.into(),
            ParamValue::I16(v) => v.into(),
            ParamValue::I32(v) => v.into(),
            ParamValue::I64(v) => v.into(),
            ParamValue::U8(v) => v.into(),
            ParamValue::U16(v) => v.into(),
            ParamValue::U32(v) => v.into(),
            ParamValue::U64(v) => v.into(),
            ParamValue::Str(_) | ParamValue::Untyped(_) => return None,
        })
    }
}

/// One parameter of NCCL's registry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    /// The key, which is also the environment variable (`NCCL_DEBUG`).
    pub key: String,
    /// The value NCCL uses, typed.
    pub value: ParamValue,
    /// The value as NCCL writes it (`ncclParamGetParameter`): `AUTO` for a
    /// value meaning "NCCL decides", names for enums and bit sets
    /// (`WARN,ATTN`), `TRUE`/`FALSE` for a `bool`.
    pub text: String,
}

impl Param {
    /// NCCL's text of the value, safe to print (control characters escaped,
    /// shortened), in quotes for a string.
    pub(crate) fn shown(&self) -> String {
        let text = crate::base::text::quote(&self.text);
        match self.value {
            ParamValue::Str(_) => format!("\"{text}\""),
            _ => text,
        }
    }
}

impl fmt::Display for Param {
    /// `KEY (type) = text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) = {}",
            self.key,
            self.value.param_type(),
            self.shown()
        )
    }
}

/// NCCL's parameters, as its parameter registry (NCCL 2.30.4+) has them,
/// sorted by key: what `nccl::params()` returns.
///
/// NCCL resolves each parameter from its environment plugin (by default the
/// process environment and `nccl.conf`) when it is first read, and falls
/// back to its default; the values here are those NCCL uses. The registry
/// holds the parameters NCCL has moved to it: in 2.30.7 the debug settings,
/// in 2.32.6 also the InfiniBand ones; tuning knobs such as `NCCL_ALGO` and
/// `NCCL_PROTO` are not in it yet ([`Capabilities`](crate::Capabilities)
/// reports those). NCCL's `ncclParamDumpAll`, which prints to the process's
/// standard output, is not called: this type's `Display` lists the same
/// keys and values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    list: Vec<Param>,
}

impl Params {
    /// The parameter `key`, if listed.
    pub fn get(&self, key: &str) -> Option<&Param> {
        self.list
            .binary_search_by(|p| p.key.as_str().cmp(key))
            .ok()
            .map(|i| &self.list[i])
    }

    /// The parameters, by key.
    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.list.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    #[cfg(nccl_fn = "ncclParamBind")]
    fn from_list(mut list: Vec<Param>) -> Params {
        list.sort_by(|a, b| a.key.cmp(&b.key));
        list.dedup_by(|a, b| a.key == b.key);
        Params { list }
    }
}

impl<'a> IntoIterator for &'a Params {
    type Item = &'a Param;
    type IntoIter = std::slice::Iter<'a, Param>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl fmt::Display for Params {
    /// One line per parameter: key, type, NCCL's text of the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.list {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type a parameter can be read as with `nccl::param`: the integer
/// types NCCL has typed getters for, and `String`. Sealed.
pub trait ParamGet: sealed::Sealed + Sized {
    /// The parameter type it reads.
    const TYPE: ParamType;
    #[doc(hidden)]
    fn from_value(v: ParamValue) -> Option<Self>;
}

macro_rules! param_get {
    ($($t:ty => $v:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl ParamGet for $t {
            const TYPE: ParamType = ParamType::$v;
            fn from_value(v: ParamValue) -> Option<Self> {
                match v {
                    ParamValue::$v(x) => Some(x),
                    _ => None,
                }
            }
        }
    )*};
}
param_get!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32,
    u64 => U64, String => Str);

/// The API that every reading of the registry needs.
const API: &str = "ncclParamBind";

/// The key is not in NCCL's registry (or cannot be a C string).
#[cfg(nccl_fn = "ncclParamBind")]
fn unknown_key(key: &str) -> Error {
    Error::invalid(
        "param",
        "key",
        "a key of the libnccl's parameter registry (nccl::params() lists the published ones)",
        crate::base::text::quote(key),
    )
}

/// Every parameter NCCL publishes (all registered ones when
/// `NCCL_PARAM_DUMP_ALL` is set), with its type and value, sorted by key
/// ([`Params`] says what NCCL's registry holds).
///
/// ```no_run
/// # fn main() -> nccl::Result<()> {
/// let all = nccl::params()?; // Unsupported before NCCL 2.30.4
/// for p in &all {
///     log::info!("{} ({}) = {}", p.key, p.value.param_type(), p.text);
/// }
/// let text = all.to_string(); // the same, one line each
/// # Ok(()) }
/// ```
///
/// # Errors
/// `Unsupported` before NCCL 2.30.4 (header or runtime); NCCL's error.
#[cfg(nccl_fn = "ncclParamBind")]
pub fn params() -> Result<Params> {
    crate::base::runtime::require_api(API)?;
    let _serial = imp::serial();
    let keys = imp::keys()?;
    let mut list = Vec::with_capacity(keys.len());
    for key in keys {
        list.push(imp::read(&key)?.ok_or_else(|| unknown_key(&key))?);
    }
    Ok(Params::from_list(list))
}

/// The value of parameter `key` as `T` (`i32`, `u64`, `String`, …), which
/// must be the type NCCL declares it with ([`Param::read`] reads any type).
///
/// ```no_run
/// # fn main() -> nccl::Result<()> {
/// let subsystems: u64 = nccl::param("NCCL_DEBUG_SUBSYS")?;
/// # let _ = subsystems; Ok(()) }
/// ```
///
/// # Errors
/// `InvalidArgument` for a key NCCL does not register, or a `T` other than
/// the parameter's type (the error names it); `Unsupported` before NCCL
/// 2.30.4 (header or runtime); NCCL's error.
#[cfg(nccl_fn = "ncclParamBind")]
pub fn param<T: ParamGet>(key: &str) -> Result<T> {
    crate::base::runtime::require_api(API)?;
    let _serial = imp::serial();
    let h = imp::bind(key)?.ok_or_else(|| unknown_key(key))?;
    let value = match imp::typed(h, T::TYPE)? {
        Some(v) => v,
        None => {
            let actual = imp::read(key)?.ok_or_else(|| unknown_key(key))?;
            return Err(Error::invalid(
                "param",
                "T",
                format!(
                    "{}, the type NCCL declares {} with",
                    actual.value.param_type(),
                    crate::base::text::quote(key)
                ),
                T::TYPE,
            ));
        }
    };
    T::from_value(value).ok_or_else(|| {
        // NCCL answered the getter of T::TYPE: the value is of that type
        Error::invalid(
            "param",
            "T",
            "the type of the getter NCCL answered",
            T::TYPE,
        )
    })
}

impl Param {
    /// Reads parameter `key` from NCCL's registry, in its type (found by
    /// asking NCCL's typed getters), with NCCL's text of the value.
    ///
    /// # Errors
    /// `InvalidArgument` for a key NCCL does not register; `Unsupported`
    /// before NCCL 2.30.4 (header or runtime); NCCL's error.
    #[cfg(nccl_fn = "ncclParamBind")]
    pub fn read(key: &str) -> Result<Param> {
        crate::base::runtime::require_api(API)?;
        let _serial = imp::serial();
        imp::read(key)?.ok_or_else(|| unknown_key(key))
    }
}

/// Parameter `key` if NCCL's registry has it (`None` if not); `Unsupported`
/// when this build or the runtime has no parameter API.
pub(crate) fn lookup(key: &str) -> Result<Option<Param>> {
    #[cfg(nccl_fn = "ncclParamBind")]
    {
        crate::base::runtime::require_api(API)?;
        let _serial = imp::serial();
        imp::read(key)
    }
    #[cfg(not(nccl_fn = "ncclParamBind"))]
    {
        let _ = key;
        Err(header_lacks()?)
    }
}

/// [`params`](crate::params), or `Unsupported` when this build's header lacks the API.
pub(crate) fn all() -> Result<Params> {
    #[cfg(nccl_fn = "ncclParamBind")]
    {
        params()
    }
    #[cfg(not(nccl_fn = "ncclParamBind"))]
    {
        Err(header_lacks()?)
    }
}

/// The `Unsupported` error of a build whose header has no parameter API
/// (what [`require_api`](crate::require_api) answers then).
#[cfg(not(nccl_fn = "ncclParamBind"))]
fn header_lacks() -> Result<Error> {
    Ok(Error::Unsupported {
        api: API,
        since: crate::base::runtime::since(API),
        runtime: crate::base::runtime::checked_runtime()?,
    })
}

#[cfg(nccl_fn = "ncclParamBind")]
mod imp {
    //! The calls into NCCL's registry. Every call is made with [`serial`]
    //! held: NCCL 2.30's `ncclParamBind` and `ncclParamGetParameter` note
    //! each key they see in a `static std::unordered_set` without a lock
    //! (`src/param/c_api.cc`), so two threads calling them at once race
    //! inside NCCL. The lock orders this crate's calls; other code of the
    //! process calling NCCL's parameter API is outside its reach.

    use std::ffi::{CStr, CString, c_char, c_int};
    use std::sync::{Mutex, MutexGuard};

    use super::{ParamType, ParamValue};
    use crate::base::call::check;
    use crate::base::error::Result;
    use crate::sys;

    static SERIAL: Mutex<()> = Mutex::new(());

    /// Holds the lock that serializes this crate's calls into NCCL's
    /// parameter API (see the module docs).
    pub(super) fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of `key`; `None` when NCCL does not register it.
    pub(super) fn bind(key: &str) -> Result<Option<sys::ncclParamHandle_t>> {
        let Ok(c) = CString::new(key) else {
            return Ok(None);
        };
        let mut h: sys::ncclParamHandle_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer and NUL-terminated key, both live for
        // the call; the handle NCCL writes points into its registry, which
        // lives as long as the library (never unloaded: see `library`).
        let r = unsafe { sys::ncclParamBind(&mut h, c.as_ptr()) };
        match r {
            sys::ncclResult_t::ncclSuccess if !h.is_null() => Ok(Some(h)),
            // NCCL's answer for a key it does not register
            sys::ncclResult_t::ncclInvalidArgument => Ok(None),
            r => check("ncclParamBind", r).map(|()| None),
        }
    }

    /// The keys NCCL lists (`ncclParamGetAllParameterKeys`).
    pub(super) fn keys() -> Result<Vec<String>> {
        let mut table: *mut *const c_char = std::ptr::null_mut();
        let mut n: c_int = 0;
        // SAFETY: valid out-pointers; NCCL fills them with a thread-local
        // table of `n` NUL-terminated strings, valid until its next such
        // call on this thread, which cannot happen before the copy below
        // (the lock is held and nothing else runs in between).
        check("ncclParamGetAllParameterKeys", unsafe {
            sys::ncclParamGetAllParameterKeys(&mut table, &mut n)
        })?;
        let n = usize::try_from(n).unwrap_or(0);
        if table.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: `table` holds `n` entries (see above).
        let entries = unsafe { std::slice::from_raw_parts(table, n) };
        Ok(entries
            .iter()
            .filter(|p| !p.is_null())
            // SAFETY: each entry is a NUL-terminated string (see above).
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect())
    }

    /// NCCL's text of `key`'s value; `None` when it does not register it.
    fn text(key: &str) -> Result<Option<String>> {
        let Ok(c) = CString::new(key) else {
            return Ok(None);
        };
        let mut p: *const c_char = std::ptr::null();
        let mut len: c_int = 0;
        // SAFETY: valid key and out-pointers; NCCL points `p` at a
        // thread-local string of `len` bytes, valid until its next such call
        // on this thread: copied below, before any.
        let r = unsafe { sys::ncclParamGetParameter(c.as_ptr(), &mut p, &mut len) };
        match r {
            sys::ncclResult_t::ncclSuccess => {}
            sys::ncclResult_t::ncclInvalidArgument => return Ok(None),
            r => return check("ncclParamGetParameter", r).map(|()| None),
        }
        if p.is_null() {
            return Ok(Some(String::new()));
        }
        // SAFETY: NUL-terminated (a std::string's c_str), see above.
        Ok(Some(
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned(),
        ))
    }

    /// The value's bytes (`ncclParamGet`), asking with a larger buffer while
    /// NCCL says it is too small; `None` for a value over 1 MiB, which is
    /// not read.
    fn bytes(h: sys::ncclParamHandle_t, hint: usize) -> Result<Option<Vec<u8>>> {
        const MAX: usize = 1 << 20;
        let mut cap = hint.clamp(64, MAX);
        loop {
            let mut buf = vec![0u8; cap];
            let mut len: c_int = 0;
            // SAFETY: a handle from ncclParamBind; `buf` holds `cap` bytes
            // (cap <= 1 MiB fits c_int), of which NCCL writes at most that
            // many and says how many in `len`.
            let r =
                unsafe { sys::ncclParamGet(h, buf.as_mut_ptr().cast(), cap as c_int, &mut len) };
            match r {
                sys::ncclResult_t::ncclSuccess => {
                    buf.truncate(usize::try_from(len).unwrap_or(0).min(cap));
                    return Ok(Some(buf));
                }
                // too small (NCCL answers so with len = 0)
                sys::ncclResult_t::ncclInvalidArgument if cap < MAX => cap = (cap * 2).min(MAX),
                sys::ncclResult_t::ncclInvalidArgument => return Ok(None),
                r => return check("ncclParamGet", r).map(|()| None),
            }
        }
    }

    /// The value read with the getter of `ty`; `None` when the parameter is
    /// of another type (NCCL answers `ncclInvalidArgument` then).
    pub(super) fn typed(h: sys::ncclParamHandle_t, ty: ParamType) -> Result<Option<ParamValue>> {
        macro_rules! get {
            ($f:ident, $t:ty, $v:ident) => {{
                let mut x: $t = 0;
                // SAFETY: a handle from ncclParamBind and a valid out-pointer
                // of the getter's type; NCCL checks the parameter's type
                // before writing.
                let r = unsafe { sys::$f(h, &mut x) };
                (stringify!($f), r, ParamValue::$v(x))
            }};
        }
        let (api, r, v) = match ty {
            ParamType::I8 => get!(ncclParamGetI8, i8, I8),
            ParamType::I16 => get!(ncclParamGetI16, i16, I16),
            ParamType::I32 => get!(ncclParamGetI32, i32, I32),
            ParamType::I64 => get!(ncclParamGetI64, i64, I64),
            ParamType::U8 => get!(ncclParamGetU8, u8, U8),
            ParamType::U16 => get!(ncclParamGetU16, u16, U16),
            ParamType::U32 => get!(ncclParamGetU32, u32, U32),
            ParamType::U64 => get!(ncclParamGetU64, u64, U64),
            ParamType::Str => {
                let mut p: *const c_char = std::ptr::null();
                // SAFETY: a handle from ncclParamBind and a valid
                // out-pointer; NCCL points it at a thread-local string,
                // valid until its next ncclParamGetStr on this thread:
                // copied below, before any.
                let r = unsafe { sys::ncclParamGetStr(h, &mut p) };
                let s = if r == sys::ncclResult_t::ncclSuccess && !p.is_null() {
                    // SAFETY: NUL-terminated (see above).
                    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
                } else {
                    String::new()
                };
                ("ncclParamGetStr", r, ParamValue::Str(s))
            }
            ParamType::Untyped => return Ok(None),
        };
        match r {
            sys::ncclResult_t::ncclSuccess => Ok(Some(v)),
            sys::ncclResult_t::ncclInvalidArgument => Ok(None),
            r => check(api, r).map(|()| None),
        }
    }

    /// Parameter `key` in its type; `None` when NCCL does not register it.
    ///
    /// NCCL's C API says a parameter's type only by which typed getter
    /// answers: the value's size (from `ncclParamGet`) narrows the integer
    /// types to try, text is tried last, and a value no getter answers (a
    /// `bool`, an enum) is untyped.
    pub(super) fn read(key: &str) -> Result<Option<super::Param>> {
        let Some(h) = bind(key)? else {
            return Ok(None);
        };
        let Some(text) = text(key)? else {
            return Ok(None);
        };
        // a value over 1 MiB (from an nccl.conf, say) is not read: only the
        // text getter may still answer for it
        let raw = bytes(h, text.len() + 1)?;
        let ints: &[ParamType] = match raw.as_ref().map(Vec::len) {
            Some(1) => &[ParamType::I8, ParamType::U8],
            Some(2) => &[ParamType::I16, ParamType::U16],
            Some(4) => &[ParamType::I32, ParamType::U32],
            Some(8) => &[ParamType::I64, ParamType::U64],
            _ => &[],
        };
        let mut value = None;
        for &ty in ints.iter().chain(&[ParamType::Str]) {
            if let Some(v) = typed(h, ty)? {
                value = Some(v);
                break;
            }
        }
        Ok(Some(super::Param {
            key: key.to_string(),
            value: value.unwrap_or(ParamValue::Untyped(raw.unwrap_or_default())),
            text,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: ParamValue, text: &str) -> Param {
        Param {
            key: key.into(),
            value,
            text: text.into(),
        }
    }

    #[test]
    fn values_know_their_types_and_integers() {
        let cases = [
            (ParamValue::I8(-1), ParamType::I8, Some(-1)),
            (
                ParamValue::U64(u64::MAX),
                ParamType::U64,
                Some(u64::MAX as i128),
            ),
            (
                ParamValue::I64(i64::MIN),
                ParamType::I64,
                Some(i64::MIN as i128),
            ),
            (ParamValue::U8(7), ParamType::U8, Some(7)),
            (ParamValue::Str("x".into()), ParamType::Str, None),
            (ParamValue::Untyped(vec![1]), ParamType::Untyped, None),
        ];
        for (v, t, i) in cases {
            assert_eq!(v.param_type(), t);
            assert_eq!(v.as_int(), i, "{v:?}");
            assert_eq!(
                <u8 as ParamGet>::from_value(v.clone()).is_some(),
                t == ParamType::U8
            );
            assert_eq!(
                <String as ParamGet>::from_value(v).is_some(),
                t == ParamType::Str
            );
        }
        assert_eq!(format!("[{:<8}]", ParamType::U32), "[u32     ]");
        assert_eq!(<i32 as ParamGet>::TYPE, ParamType::I32);
    }

    #[test]
    fn params_display_escapes_and_quotes_strings() {
        let list = Params {
            list: vec![
                p(
                    "NCCL_A",
                    ParamValue::Str("[%F] \x1b[2J".into()),
                    "[%F] \x1b[2J",
                ),
                p("NCCL_B", ParamValue::I32(-1), "AUTO"),
            ],
        };
        assert_eq!(list.get("NCCL_B").unwrap().value, ParamValue::I32(-1));
        assert!(list.get("NCCL_C").is_none());
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.to_string(),
            "NCCL_A (string) = \"[%F] \\u{1b}[2J\"\nNCCL_B (i32) = AUTO\n"
        );
    }
}
