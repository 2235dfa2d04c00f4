//! Turns bindgen's bindings (generated now, or committed) into the crate's
//! API for one build: only what the header declares, each function either
//! linked directly or resolved by name at first call, the config initializer
//! and layout, and the table of declared names.
//!
//! - Static linking: every function is linked directly.
//! - Dynamic linking: functions of the floor release (2.18.1) are linked
//!   directly; every newer one is a wrapper with the C signature that looks
//!   the symbol up in the libnccl already loaded and returns
//!   `ncclInvalidUsage` (or a null pointer, or nothing) when it is missing, so
//!   that a program built on a new header starts on an old library.
//! - Runtime loading (`runtime-load`): every function is such a wrapper.

use std::collections::BTreeSet;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};

/// How the functions reach libnccl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calls {
    /// All linked directly.
    Direct,
    /// Functions of the floor release directly, newer ones resolved lazily.
    FloorDirect,
    /// All resolved lazily from a library opened at run time.
    AllLazy,
}

/// What the header of this build declares (the API surface).
pub struct Surface<'a> {
    /// Functions.
    pub functions: &'a BTreeSet<String>,
    /// Everything else declared: config fields, constants, result codes.
    pub other: &'a BTreeSet<String>,
    /// The header's version, written over the bindings' `NCCL_*` version
    /// constants (committed bindings come from the newest patch release of
    /// the minor).
    pub version: (u32, u32, u32),
}

/// The bindings for this build, as Rust source for `OUT_DIR/bindings.rs`.
pub fn build(
    bindings: &str,
    surface: &Surface<'_>,
    calls: Calls,
    is_floor: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let file = syn::parse_file(bindings).map_err(|e| format!("parsing the bindings: {e}"))?;
    let mut items = Vec::new();
    let mut direct = Vec::new();
    let mut lazy = Vec::new();
    let mut config_name = None;
    for item in file.items {
        match item {
            syn::Item::ForeignMod(fm) => {
                for fi in fm.items {
                    let syn::ForeignItem::Fn(f) = fi else {
                        return Err(
                            "the bindings declare a foreign item that is not a function".into()
                        );
                    };
                    let name = f.sig.ident.to_string();
                    if !surface.functions.contains(&name) {
                        continue; // a newer patch release's function: not in this header
                    }
                    let linked = match calls {
                        Calls::Direct => true,
                        Calls::FloorDirect => is_floor(&name),
                        Calls::AllLazy => false,
                    };
                    if linked {
                        direct.push(f);
                    } else {
                        lazy.push(f);
                    }
                }
            }
            syn::Item::Const(mut c) => {
                let name = c.ident.to_string();
                let (major, minor, patch) = surface.version;
                let value = match name.as_str() {
                    "NCCL_MAJOR" => Some(major),
                    "NCCL_MINOR" => Some(minor),
                    "NCCL_PATCH" => Some(patch),
                    "NCCL_VERSION_CODE" => Some(major * 10000 + minor * 100 + patch),
                    _ => None,
                };
                if let Some(v) = value {
                    let lit = syn::LitInt::new(&v.to_string(), Span::call_site());
                    *c.expr = syn::parse_quote!(#lit);
                } else if name.starts_with("NCCL_") && !surface.other.contains(&name) {
                    continue; // a newer patch release's macro
                }
                items.push(quote!(#c));
            }
            syn::Item::Type(t) if t.ident == "ncclConfig_t" => {
                if let syn::Type::Path(p) = &*t.ty {
                    config_name = p.path.get_ident().map(|i| i.to_string());
                }
                items.push(quote!(#t));
            }
            other => items.push(quote!(#other)),
        }
    }
    let config_name = config_name.ok_or("the bindings have no `ncclConfig_t`")?;
    let config = config_items(bindings, &config_name)?;

    direct.sort_by_key(|f| f.sig.ident.to_string());
    lazy.sort_by_key(|f| f.sig.ident.to_string());
    let wrappers = lazy
        .iter()
        .enumerate()
        .map(|(i, f)| wrapper(i, f))
        .collect::<Result<String, _>>()?;
    let lazy_names: Vec<TokenStream> = lazy
        .iter()
        .map(|f| {
            let c = format!("c\"{}\"", f.sig.ident);
            c.parse::<TokenStream>()
                .map_err(|e| format!("the name {c} is not a literal: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let n_lazy = lazy.len();
    let lookup_arms = direct
        .iter()
        .map(|f| {
            let n = f.sig.ident.to_string();
            quote!(#n => crate::loader::Lookup::Linked,)
        })
        .chain(lazy.iter().enumerate().map(|(i, f)| {
            let n = f.sig.ident.to_string();
            quote!(#n => crate::loader::Lookup::Lazy(#i),)
        }));
    let mut declared: Vec<&String> = surface
        .functions
        .iter()
        .chain(surface.other.iter())
        .collect();
    declared.sort();
    declared.dedup();
    let direct_block = if direct.is_empty() {
        quote!()
    } else {
        quote!(unsafe extern "C" { #(#direct)* })
    };

    let tokens = quote! {
        #(#items)*

        #direct_block

        /// Symbol names of the functions resolved at first call.
        pub(crate) static LAZY_NAMES: [&::core::ffi::CStr; #n_lazy] = [#(#lazy_names),*];

        /// How a function of this build reaches libnccl.
        pub(crate) fn lookup(name: &str) -> crate::loader::Lookup {
            match name {
                #(#lookup_arms)*
                _ => crate::loader::Lookup::Absent,
            }
        }

        /// Every name the header of this build declares (functions, `ncclConfig_t`
        /// fields, result codes, enumerators and `NCCL_*` macros), sorted.
        pub const DECLARED: &[&str] = &[#(#declared),*];

        #config
    };
    let file: syn::File =
        syn::parse2(tokens).map_err(|e| format!("the generated bindings do not parse: {e}"))?;
    Ok(format!("{}\n{wrappers}", prettyplease::unparse(&file)))
}

/// `NCCL_CONFIG_INITIALIZER` and the field layout of `ncclConfig_t`.
///
/// The initializer is what every NCCL header's macro does (checked against
/// every release's header by `cargo xtask bindgen`): the size of the struct,
/// the magic number, the version code, then every `int` field
/// `NCCL_CONFIG_UNDEF_INT` and every pointer field `NCCL_CONFIG_UNDEF_PTR`.
fn config_items(bindings: &str, struct_name: &str) -> Result<TokenStream, String> {
    let file = syn::parse_file(bindings).map_err(|e| format!("parsing the bindings: {e}"))?;
    let s = file
        .items
        .iter()
        .find_map(|i| match i {
            syn::Item::Struct(s) if s.ident == struct_name => Some(s),
            _ => None,
        })
        .ok_or_else(|| format!("the bindings have no struct {struct_name}"))?;
    let ident = format_ident!("{struct_name}");
    let mut inits = Vec::new();
    let mut layout = Vec::new();
    for f in &s.fields {
        let name = f
            .ident
            .as_ref()
            .ok_or("ncclConfig_t has an unnamed field")?;
        let ty = &f.ty;
        let value = match name.to_string().as_str() {
            "size" => quote!(::core::mem::size_of::<#ident>()),
            "magic" => quote!(0xcafe_beef),
            "version" => quote!(NCCL_VERSION_CODE as _),
            _ => match ty {
                syn::Type::Ptr(_) => quote!(::core::ptr::null()),
                _ => quote!(crate::NCCL_CONFIG_UNDEF_INT),
            },
        };
        inits.push(quote!(#name: #value));
        let n = name.to_string();
        layout.push(
            quote!((#n, ::core::mem::offset_of!(#ident, #name), ::core::mem::size_of::<#ty>())),
        );
    }
    Ok(quote! {
        /// `NCCL_CONFIG_INITIALIZER` of this build's header: size, magic and
        /// version, every other field undefined (NCCL's default). To pass a
        /// config to an older libnccl, start from
        /// [`config_for_runtime`] instead.
        pub const NCCL_CONFIG_INITIALIZER: ncclConfig_t = #ident { #(#inits),* };

        /// The fields of `ncclConfig_t`: name, offset and size in bytes.
        pub const CONFIG_LAYOUT: &[(&str, usize, usize)] = &[#(#layout),*];
    })
}

/// A wrapper with the C signature of `f` that resolves the symbol at first
/// call (slot `index`), as Rust source. Written as text, not tokens, so that
/// its `// SAFETY:` comments reach the file.
fn wrapper(index: usize, f: &syn::ForeignItemFn) -> Result<String, String> {
    let sname = f.sig.ident.to_string();
    let mut params = Vec::new();
    let mut args = Vec::new();
    let mut arg_types = Vec::new();
    for input in &f.sig.inputs {
        let syn::FnArg::Typed(pt) = input else {
            return Err(format!("{sname} has a `self` argument"));
        };
        let syn::Pat::Ident(pi) = &*pt.pat else {
            return Err(format!("{sname} has an argument that is not a plain name"));
        };
        let ty = tidy_type(&pt.ty);
        params.push(format!("{}: {ty}", pi.ident));
        args.push(pi.ident.to_string());
        arg_types.push(ty);
    }
    if f.sig.variadic.is_some() {
        return Err(format!("{sname} is variadic"));
    }
    let output = match &f.sig.output {
        syn::ReturnType::Default => String::new(),
        syn::ReturnType::Type(_, ty) => format!("-> {}", tidy_type(ty)),
    };
    let (missing, when_missing) = match &f.sig.output {
        syn::ReturnType::Default => ("()", "does nothing"),
        syn::ReturnType::Type(_, ty) => match &**ty {
            syn::Type::Ptr(p) if matches!(p.mutability, syn::PointerMutability::Mut(_)) => {
                ("::core::ptr::null_mut()", "returns a null pointer")
            }
            syn::Type::Ptr(_) => ("::core::ptr::null()", "returns a null pointer"),
            syn::Type::Path(p) if p.path.is_ident("ncclResult_t") => (
                "ncclResult_t::ncclInvalidUsage",
                "returns `ncclInvalidUsage`",
            ),
            _ => return Err(format!("{sname}: no value to return when it is missing")),
        },
    };
    let ignore: String = args.iter().map(|a| format!("let _ = {a}; ")).collect();
    Ok(format!(
        "/// `{sname}`, looked up by name in the loaded libnccl at its first call. When that\n\
         /// library lacks it, this {when_missing}; [`available`]`(\"{sname}\")`\n\
         /// says so beforehand.\n\
         /// (A Rust function with the C ABI, so that its type is that of a linked one.)\n\
         #[inline]\n\
         pub unsafe extern \"C\" fn {sname}({params}) {output} {{\n\
         \x20   match crate::loader::symbol({index}) {{\n\
         \x20       Some(f) => {{\n\
         \x20           // SAFETY: `f` is libnccl's `{sname}`, whose C signature is this\n\
         \x20           // function's (bindgen, from nccl.h), so the cast and the call are\n\
         \x20           // sound; the caller upholds the function's own contract.\n\
         \x20           unsafe {{\n\
         \x20               ::core::mem::transmute::<*mut ::core::ffi::c_void, unsafe extern \"C\" fn({types}) {output}>(f)({call})\n\
         \x20           }}\n\
         \x20       }}\n\
         \x20       None => {{ {ignore}{missing} }}\n\
         \x20   }}\n\
         }}\n\n",
        params = params.join(", "),
        types = arg_types.join(", "),
        call = args.join(", "),
    ))
}

/// A type as prettyplease writes it (`*const ::core::ffi::c_void`).
fn tidy_type(ty: &syn::Type) -> String {
    let item: syn::File = syn::parse_quote!(type T = #ty;);
    let text = prettyplease::unparse(&item);
    text.trim()
        .strip_prefix("type T = ")
        .and_then(|t| t.strip_suffix(';'))
        .map_or_else(|| quote!(#ty).to_string(), str::to_string)
}
