//! Unit tests of `scan.rs` (what a header declares) on a small header in the
//! shape of NCCL's, as the C preprocessor leaves it, and of the checks that
//! `versions.rs` makes on every release.

use crate::scan::{ConfigField, scan};

/// Preprocessed text: line markers, an attribute before a name, a `pnccl`
/// twin, a function-pointer parameter, typedef'd enums and the config.
const EXPANDED: &str = r#"
# 1 "nccl.h"
typedef struct ncclComm* ncclComm_t;
typedef enum { ncclSuccess = 0,
               ncclUnhandledCudaError = 1,
               ncclInProgress = 7,
               ncclTimeout,
               ncclNumResults = 9 } ncclResult_t;
typedef enum {
  ncclHostCftDefault = (-2147483647 - 1),
  ncclHostCftEnable = 1
} ncclHostCftMode_t;
typedef struct ncclConfig_v23100 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
  const char *netName;
  int graphUsageMode;
} ncclConfig_t;
ncclResult_t ncclGetVersion(int *version);
ncclResult_t pncclGetVersion(int *version);
const char* ncclGetErrorString(ncclResult_t result);
__attribute__ ((deprecated("not API"))) void ncclResetDebugInit();
__attribute__ ((visibility("default"))) ncclResult_t ncclCommRevoke(ncclComm_t comm, int flags);
ncclResult_t ncclHook(ncclComm_t comm, void (*cb)(int ncclNotAFunction));
NCCL_SYS_MAJOR 2
"#;

const RAW: &str = r#"
#ifndef NCCL_H_
#define NCCL_H_
#define NCCL_MAJOR 2
#define NCCL_VERSION(X,Y,Z) ((X) * 10000 + (Y) * 100 + (Z))
#define NCCL_WIN_REQUIRED_ALIGNMENT 4096 // comment
/* #define NCCL_IN_A_COMMENT 1 */
#define NCCL_CONFIG_INITIALIZER {                                       \
  sizeof(ncclConfig_t), /* size */                                      \
  0xcafebeef,           /* magic */                                     \
  NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH), /* version */       \
  NCCL_CONFIG_UNDEF_INT,                    /* blocking */              \
  NCCL_CONFIG_UNDEF_PTR,                    /* netName */               \
  NCCL_CONFIG_UNDEF_INT                     /* graphUsageMode */        \
}
#endif
"#;

#[test]
fn functions_are_the_top_level_nccl_names() {
    let d = scan(EXPANDED, RAW).unwrap();
    let f: Vec<&str> = d.functions.iter().map(String::as_str).collect();
    assert_eq!(
        f,
        [
            "ncclCommRevoke",
            "ncclGetErrorString",
            "ncclGetVersion",
            "ncclHook"
        ],
        "no pnccl twin, nothing not-API, nothing inside parentheses"
    );
}

#[test]
fn config_fields_in_order_with_types() {
    let d = scan(EXPANDED, RAW).unwrap();
    let field = |name: &str, c_type: &str| ConfigField {
        name: name.into(),
        c_type: c_type.into(),
    };
    assert_eq!(
        d.config_fields,
        [
            field("size", "size_t"),
            field("magic", "unsigned int"),
            field("version", "unsigned int"),
            field("blocking", "int"),
            field("netName", "const char *"),
            field("graphUsageMode", "int"),
        ]
    );
}

#[test]
fn result_codes_with_values_and_other_enumerators_as_constants() {
    let d = scan(EXPANDED, RAW).unwrap();
    let codes: Vec<(&str, i64)> = d
        .result_codes
        .iter()
        .map(|(n, v)| (n.as_str(), *v))
        .collect();
    assert_eq!(
        codes,
        [
            ("ncclSuccess", 0),
            ("ncclUnhandledCudaError", 1),
            ("ncclInProgress", 7),
            ("ncclTimeout", 8),
            ("ncclNumResults", 9)
        ]
    );
    assert!(d.constants.contains("ncclHostCftDefault"));
    assert!(d.constants.contains("ncclHostCftEnable"));
    assert!(!d.constants.contains("ncclSuccess"));
}

#[test]
fn macros_and_the_config_initializer_from_the_raw_header() {
    let d = scan(EXPANDED, RAW).unwrap();
    assert!(d.constants.contains("NCCL_MAJOR"));
    assert!(d.constants.contains("NCCL_WIN_REQUIRED_ALIGNMENT"));
    assert!(d.constants.contains("NCCL_CONFIG_INITIALIZER"));
    assert!(!d.constants.contains("NCCL_VERSION"), "function-like");
    assert!(!d.constants.contains("NCCL_H_"), "include guard");
    assert!(!d.constants.contains("NCCL_IN_A_COMMENT"));
    assert_eq!(
        d.config_initializer,
        [
            "sizeof(ncclConfig_t)",
            "0xcafebeef",
            "NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH)",
            "NCCL_CONFIG_UNDEF_INT",
            "NCCL_CONFIG_UNDEF_PTR",
            "NCCL_CONFIG_UNDEF_INT",
        ]
    );
    crate::versions::check_initializer("test", &d).unwrap();
}

#[test]
fn an_initializer_with_a_real_default_is_refused() {
    let mut d = scan(EXPANDED, RAW).unwrap();
    d.config_initializer[5] = "1".into();
    let e = crate::versions::check_initializer("test", &d).unwrap_err();
    assert!(e.contains("graphUsageMode starts as `1`"), "{e}");
    d.config_initializer.pop();
    let e = crate::versions::check_initializer("test", &d).unwrap_err();
    assert!(e.contains("5 entries for 6 fields"), "{e}");
}

#[test]
fn not_an_nccl_header() {
    let e = scan("int main(void);", "").unwrap_err();
    assert!(e.contains("ncclResult_t"), "{e}");
}
