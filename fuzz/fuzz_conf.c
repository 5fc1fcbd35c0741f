/* fuzz_conf.c -- the configuration parsers (common/conf.c): the file, the command line, finalize.
 *
 * Input: a config file, optionally followed by a line "--argv--" and command-line words, one
 * per line. The file is written to a memfd and read through its /proc/self/fd path, so the real
 * conf_load_file() (fopen, fgets, the 1024-byte line limit) runs unchanged and conf.c needs no
 * buffer entry point. The words become `wshub -c <that file> WORD...` for conf_from_args(),
 * which applies them with conf_set()'s rules over the file (words naming another config file are
 * dropped: the harness must not read arbitrary paths).
 * Oracles, besides the sanitizers:
 *   - every error names where it happened: the file path first for conf_load_file();
 *   - conf_format_value() writes each option so that conf_set() accepts it back unchanged (its
 *     documented contract, which the hub's reload relies on), for any configuration loaded; a
 *     list option (found by behaviour: setting it twice keeps both) is written one entry per
 *     line and set back as a clear plus one conf_set() per entry;
 *   - a configuration that loads and finalizes prints (conf_dump, i.e. `wshub -T`) as a file
 *     that loads back to the same values and finalizes again.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"

#define ARGV_MARK "\n--argv--\n"
#define MAX_WORDS 32

static int conf_fd = -1;
static char conf_path[64];
#define VALUE_MAX 16384 /* any formatted value, a list option's entries included */

static char option_names[CONF_MAX_OPTIONS][64];
static int option_is_list[CONF_MAX_OPTIONS]; /* "name x" twice gives two entries */
static int n_option_names;

/* Collects the option names from --help's listing ("  --name-with-dashes  help"). */
static void collect_option_names(void)
{
    char *text = NULL, line[512];
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    FUZZ_CHECK(m != NULL, "open_memstream");
    conf_print_options(m);
    fclose(m);
    FILE *r = fmemopen(text, len, "r");
    FUZZ_CHECK(r != NULL, "fmemopen");
    while (fgets(line, sizeof(line), r) && n_option_names < CONF_MAX_OPTIONS) {
        if (strncmp(line, "  --", 4) != 0)
            continue;
        size_t n = strcspn(line + 4, " \n");
        FUZZ_CHECK(n > 0 && n < sizeof(option_names[0]), "option name in '%s'", line);
        memcpy(option_names[n_option_names], line + 4, n);
        option_names[n_option_names++][n] = '\0';
    }
    fclose(r);
    free(text);
    FUZZ_CHECK(n_option_names > 10, "only %d options listed", n_option_names);
}

/* Finds the list options by behaviour: setting one twice keeps both values. */
static void find_list_options(void)
{
    static struct conf c;
    char err[512], v[64];
    for (int i = 0; i < n_option_names; i++) {
        conf_defaults(&c);
        option_is_list[i] = conf_set(&c, option_names[i], "x", err, sizeof(err)) == 0 &&
                            conf_set(&c, option_names[i], "x", err, sizeof(err)) == 0 &&
                            conf_format_value(&c, option_names[i], v, sizeof(v)) == 0 &&
                            strcmp(v, "x\nx") == 0;
    }
}

static void fuzz_conf_init(void)
{
    conf_fd = memfd_create("fuzz-conf", MFD_CLOEXEC);
    FUZZ_CHECK(conf_fd >= 0, "memfd_create failed");
    snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", conf_fd);
    collect_option_names();
    find_list_options();
}

/* Makes the memfd hold exactly data[0..n). */
static void conf_file_set(const void *data, size_t n)
{
    FUZZ_CHECK(ftruncate(conf_fd, 0) == 0, "ftruncate");
    FUZZ_CHECK(n == 0 || pwrite(conf_fd, data, n, 0) == (ssize_t)n, "pwrite");
}

/* Sets option `name` back from its formatted value: one conf_set(), or for a list option
 * (entries one per line) a clear and one conf_set() per entry. Returns 0 or -1 with err. */
static int set_formatted(struct conf *c, int i, const char *v, char *err, size_t errlen)
{
    if (!option_is_list[i])
        return conf_set(c, option_names[i], v, err, errlen);
    if (conf_set(c, option_names[i], "", err, errlen) < 0)
        return -1;
    char *copy = strdup(v);
    FUZZ_CHECK(copy != NULL, "strdup");
    int rc = 0;
    for (char *save = NULL, *e = strtok_r(copy, "\n", &save); e && rc == 0;
         e = strtok_r(NULL, "\n", &save))
        rc = conf_set(c, option_names[i], e, err, errlen);
    free(copy);
    return rc;
}

/* conf_format_value -> conf_set -> conf_format_value gives the same text, for every option. */
static void check_format_round_trip(const struct conf *c, const char *what)
{
    static struct conf c2;
    static char v[VALUE_MAX], v2[VALUE_MAX];
    char err[512];
    for (int i = 0; i < n_option_names; i++) {
        const char *name = option_names[i];
        FUZZ_CHECK(conf_format_value(c, name, v, sizeof(v)) == 0, "%s: format %s", what, name);
        c2 = *c;
        FUZZ_CHECK(set_formatted(&c2, i, v, err, sizeof(err)) == 0,
                   "%s: conf_set refuses %s's own formatted value '%s': %s", what, name, v, err);
        FUZZ_CHECK(conf_format_value(&c2, name, v2, sizeof(v2)) == 0 && strcmp(v, v2) == 0,
                   "%s: %s '%s' came back as '%s'", what, name, v, v2);
    }
}

/* conf_dump's output, loaded as a file, gives the same configuration, and it finalizes. */
static void check_dump_round_trip(const struct conf *c)
{
    static struct conf back;
    static char v[VALUE_MAX], v2[VALUE_MAX];
    char *text = NULL, err[512];
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    FUZZ_CHECK(m != NULL, "open_memstream");
    conf_dump(c, m);
    fclose(m);
    conf_file_set(text, len);
    conf_defaults(&back);
    FUZZ_CHECK(conf_load_file(&back, conf_path, err, sizeof(err)) == 0,
               "conf_dump output does not load: %s\n%s", err, text);
    for (int i = 0; i < n_option_names; i++) {
        const char *name = option_names[i];
        FUZZ_CHECK(conf_format_value(c, name, v, sizeof(v)) == 0 &&
                       conf_format_value(&back, name, v2, sizeof(v2)) == 0 && strcmp(v, v2) == 0,
                   "dump round trip changed %s: '%s' -> '%s'", name, v, v2);
    }
    FUZZ_CHECK(conf_finalize(&back, err, sizeof(err)) == 0, "dumped config does not finalize: %s",
               err);
    free(text);
}

/* True for a word that would make conf_from_args() read another file. */
static int is_config_word(const char *w)
{
    return strcmp(w, "-c") == 0 || strncmp(w, "--config", 8) == 0;
}

static void fuzz_args(const char *words)
{
    static struct conf c;
    char *copy = strdup(words), *argv[MAX_WORDS + 4], err[512] = "";
    int argc = 0;
    FUZZ_CHECK(copy != NULL, "strdup");
    argv[argc++] = "wshub";
    argv[argc++] = "-c";
    argv[argc++] = conf_path;
    for (char *save = NULL, *w = strtok_r(copy, "\n", &save); w && argc < MAX_WORDS + 3;
         w = strtok_r(NULL, "\n", &save)) {
        if (!is_config_word(w))
            argv[argc++] = w;
    }
    argv[argc] = NULL;
    if (conf_from_args(&c, argc, argv, NULL, err, sizeof(err)) == 0)
        check_format_round_trip(&c, "command line");
    else
        FUZZ_CHECK(err[0] != '\0', "conf_from_args failed without a reason");
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct conf c;
    char err[512] = "";
    if (conf_fd < 0)
        fuzz_conf_init();
    const char *mark = memmem(data, size, ARGV_MARK, strlen(ARGV_MARK));
    size_t file_len = mark ? (size_t)(mark - (const char *)data) : size;

    conf_file_set(data, file_len);
    conf_defaults(&c);
    if (conf_load_file(&c, conf_path, err, sizeof(err)) < 0) {
        FUZZ_CHECK(strncmp(err, conf_path, strlen(conf_path)) == 0 && err[strlen(conf_path)] == ':',
                   "error does not start with the file name: '%s'", err);
    } else {
        check_format_round_trip(&c, "file");
        if (conf_finalize(&c, err, sizeof(err)) == 0) {
            check_format_round_trip(&c, "finalized");
            check_dump_round_trip(&c);
        }
    }
    if (mark != NULL) {
        conf_file_set(data, file_len);
        size_t off = file_len + strlen(ARGV_MARK);
        char *words = fuzz_strndup(data + off, size - off);
        fuzz_args(words);
        free(words);
    }
    return 0;
}
