/* The unique id of the C programs in tests/gpu (c_all_reduce.c,
 * group_mix.c): made here in world 1; with more ranks, rank 0 writes it to
 * the file NCCL_RS_ID_FILE names (through a temporary file and a rename)
 * and the others wait up to 60 s for it there.
 * Returns 0, 1 on an NCCL or file error, 2 on a usage error (printed). */
#ifndef NCCL_RS_ID_FILE_H
#define NCCL_RS_ID_FILE_H
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int id_from_file(ncclUniqueId *id, int rank, int world) {
  ncclResult_t r;
  if (world == 1 || rank == 0) {
    if ((r = ncclGetUniqueId(id)) != ncclSuccess) { fprintf(stderr, "ncclGetUniqueId: %s\n", ncclGetErrorString(r)); return 1; }
    if (world == 1) return 0;
  }
  const char *f = getenv("NCCL_RS_ID_FILE");
  if (!f) { fprintf(stderr, "NCCL_RS_ID_FILE is needed with WORLD_SIZE > 1\n"); return 2; }
  if (rank == 0) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", f);
    FILE *o = fopen(tmp, "wb");
    if (!o || fwrite(id, sizeof *id, 1, o) != 1) { fprintf(stderr, "cannot write %s\n", tmp); return 1; }
    fclose(o);
    if (rename(tmp, f) != 0) { fprintf(stderr, "cannot rename %s\n", tmp); return 1; }
    return 0;
  }
  FILE *i = 0;
  for (int t = 0; t < 6000 && !(i = fopen(f, "rb")); t++) usleep(10000);
  if (!i || fread(id, sizeof *id, 1, i) != 1) { fprintf(stderr, "no id in %s\n", f); return 1; }
  fclose(i);
  return 0;
}
#endif
