/* Expanded by the C preprocessor (cc::Build::expand) to read the version of
 * the nccl.h that will be bound. */
#include <nccl.h>
NCCL_SYS_VERSION_CODE NCCL_VERSION_CODE
NCCL_SYS_MAJOR NCCL_MAJOR
NCCL_SYS_MINOR NCCL_MINOR
NCCL_SYS_PATCH NCCL_PATCH
