/*
 * ntfs_populate: fills an NTFS image (made by `mkntfs -F -f -Q ...`) through libntfs-3g, without
 * root, mounts or FUSE. Test-only: it writes the image it is given and nothing else.
 *
 * Build:  cc -O1 -o ntfs_populate tests/ntfs/ntfs_populate.c -lntfs-3g
 * Usage:  ntfs_populate IMAGE < SPEC
 *
 * SPEC is read from stdin, one command per line; blank lines and lines starting with '#' are
 * ignored. Fields are separated by single spaces or tabs. PATHs are absolute, '/'-separated,
 * UTF-8 (any Unicode), with %XX escapes for bytes that cannot appear literally (%20 space,
 * %25 '%'; also decoded in stream NAMEs, in text: data and in absolute link TARGETs).
 * Parents must exist (create them with mkdir first). Commands:
 *
 *   mkdir PATH                     create a directory
 *   compressdir PATH               create a directory with FILE_ATTR_COMPRESSED: files and named
 *                                  streams created inside it later are LZNT1-compressed
 *   file PATH DATA                 create a regular file holding DATA
 *   append PATH OFFSET DATA        write DATA into the unnamed stream of an existing file at
 *                                  byte OFFSET (a hole before it stays sparse)
 *   sparse PATH OFFSET DATA        create a file and write DATA at OFFSET: the clusters before
 *                                  OFFSET are a sparse hole
 *   stream PATH NAME DATA          add a named data stream NAME (alternate data stream) to an
 *                                  existing file or directory
 *   link PATH NEWPATH              add a hard link NEWPATH to the existing file PATH
 *   symlink PATH TARGET            create a file that is an IO_REPARSE_TAG_SYMLINK reparse
 *                                  point to TARGET (relative flag set unless TARGET starts '/')
 *   makelink PATH TARGET           turn the existing file PATH into a symlink reparse point to
 *                                  TARGET (the reparse point is then added after its other
 *                                  attributes: with an attribute list it lands in an extension
 *                                  record)
 *   junction PATH TARGET           create a directory that is an IO_REPARSE_TAG_MOUNT_POINT
 *                                  reparse point to TARGET (written as \??\TARGET)
 *   dosname PATH SHORT             give the existing file PATH the DOS 8.3 alias SHORT (ASCII,
 *                                  e.g. LONGFI~1.TXT), as Windows does: its long name becomes
 *                                  the Win32 namespace, SHORT the DOS namespace
 *   encrypt PATH                   set FILE_ATTR_ENCRYPTED on an existing file (an EFS marker:
 *                                  the content stays plain, readers must refuse it)
 *   wof PATH ALGO SIZE DATA        create a CompactOS file: IO_REPARSE_TAG_WOF reparse point
 *                                  (file provider, ALGO 0 XPRESS4K, 1 LZX, 2 XPRESS8K,
 *                                  3 XPRESS16K), unnamed data of SIZE bytes left sparse, and a
 *                                  "WofCompressedData" named stream holding DATA
 *
 * DATA is one of:
 *   hex:0123abcd        the bytes given in hex (may be empty: "hex:")
 *   text:WORD           the bytes of WORD (no spaces; %XX escapes allowed)
 *   @HOSTPATH           the content of a host file (relative to the current directory)
 *   zero:N              N zero bytes
 *   fill:HH:N           N bytes of value 0xHH
 *
 * Exit status 0 on success; on failure a message naming the line goes to stderr, status 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ntfs-3g/types.h>
#include <ntfs-3g/layout.h>
#include <ntfs-3g/volume.h>
#include <ntfs-3g/inode.h>
#include <ntfs-3g/dir.h>
#include <ntfs-3g/attrib.h>
#include <ntfs-3g/reparse.h>

static int line_no;

static void die(const char *what, const char *arg)
{
	fprintf(stderr, "ntfs_populate: line %d: %s %s: %s\n", line_no, what,
		arg ? arg : "", strerror(errno));
	exit(1);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

/* Decodes %XX escapes in place. */
static void unescape(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
			*o++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

/* UTF-8 to UTF-16LE (ntfschar); returns the unit count. */
static int to_utf16(const char *s, ntfschar *out, int max)
{
	const unsigned char *p = (const unsigned char *)s;
	int n = 0;
	while (*p) {
		unsigned cp;
		if (*p < 0x80) { cp = *p++; }
		else if ((*p & 0xE0) == 0xC0) { cp = (*p++ & 0x1F) << 6; cp |= *p++ & 0x3F; }
		else if ((*p & 0xF0) == 0xE0) { cp = (*p++ & 0x0F) << 12; cp |= (*p++ & 0x3F) << 6; cp |= *p++ & 0x3F; }
		else { cp = (*p++ & 0x07) << 18; cp |= (*p++ & 0x3F) << 12; cp |= (*p++ & 0x3F) << 6; cp |= *p++ & 0x3F; }
		if (cp >= 0x10000) {
			if (n + 2 > max) break;
			cp -= 0x10000;
			out[n++] = cpu_to_le16(0xD800 | (cp >> 10));
			out[n++] = cpu_to_le16(0xDC00 | (cp & 0x3FF));
		} else {
			if (n + 1 > max) break;
			out[n++] = cpu_to_le16(cp);
		}
	}
	return n;
}

static ntfs_volume *vol;

/* Opens the inode at an absolute path by walking its components. */
static ntfs_inode *open_path(const char *path)
{
	char buf[4096];
	ntfs_inode *ni = ntfs_inode_open(vol, FILE_root);
	if (!ni) die("open root", "");
	snprintf(buf, sizeof buf, "%s", path);
	for (char *tok = strtok(buf, "/"); tok; tok = strtok(NULL, "/")) {
		ntfschar u[512];
		int n = to_utf16(tok, u, 512);
		u64 mref = ntfs_inode_lookup_by_name(ni, u, n);
		if (mref == (u64)-1) die("lookup", path);
		ntfs_inode_close(ni);
		ni = ntfs_inode_open(vol, MREF(mref));
		if (!ni) die("open", path);
	}
	return ni;
}

/* Splits PATH into its parent directory (opened) and the last component (UTF-16). */
static ntfs_inode *open_parent(const char *path, ntfschar *name, int *name_len)
{
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash || !slash[1]) { errno = EINVAL; die("bad path", path); }
	*name_len = to_utf16(slash + 1, name, 512);
	*slash = 0;
	return open_path(dir);
}

static unsigned char *load_data(const char *spec, s64 *len)
{
	unsigned char *d = NULL;
	if (!strncmp(spec, "hex:", 4)) {
		size_t n = strlen(spec + 4) / 2;
		d = malloc(n + 1);
		for (size_t i = 0; i < n; i++)
			d[i] = (unsigned char)(hexval(spec[4 + 2 * i]) * 16 + hexval(spec[5 + 2 * i]));
		*len = (s64)n;
	} else if (!strncmp(spec, "text:", 5)) {
		char *t = strdup(spec + 5);
		unescape(t);
		*len = (s64)strlen(t);
		d = (unsigned char *)t;
	} else if (spec[0] == '@') {
		FILE *f = fopen(spec + 1, "rb");
		if (!f) die("open host file", spec + 1);
		fseek(f, 0, SEEK_END);
		long n = ftell(f);
		fseek(f, 0, SEEK_SET);
		d = malloc((size_t)n + 1);
		if (fread(d, 1, (size_t)n, f) != (size_t)n) die("read host file", spec + 1);
		fclose(f);
		*len = n;
	} else if (!strncmp(spec, "zero:", 5)) {
		*len = atoll(spec + 5);
		d = calloc((size_t)*len + 1, 1);
	} else if (!strncmp(spec, "fill:", 5)) {
		int v = hexval(spec[5]) * 16 + hexval(spec[6]);
		*len = atoll(spec + 8);
		d = malloc((size_t)*len + 1);
		memset(d, v, (size_t)*len);
	} else {
		errno = EINVAL;
		die("bad DATA", spec);
	}
	return d;
}

static void write_attr(ntfs_inode *ni, ntfschar *name, int name_len, s64 off, const char *spec)
{
	s64 len;
	unsigned char *d = load_data(spec, &len);
	ntfs_attr *na = ntfs_attr_open(ni, AT_DATA, name, name_len);
	if (!na) die("attr open", spec);
	s64 done = 0;
	while (done < len) {
		s64 w = ntfs_attr_pwrite(na, off + done, len - done, d + done);
		if (w <= 0) die("write", spec);
		done += w;
	}
	/* Compressed attributes keep the last compression unit in memory until closed. */
	if ((na->data_flags & ATTR_COMPRESSION_MASK) && ntfs_attr_pclose(na)) die("pclose", spec);
	ntfs_attr_close(na);
	free(d);
}

static ntfs_inode *create(const char *path, mode_t type)
{
	ntfschar name[512];
	int n;
	ntfs_inode *dir = open_parent(path, name, &n);
	ntfs_inode *ni = ntfs_create(dir, const_cpu_to_le32(0), name, n, type);
	if (!ni) die("create", path);
	ntfs_inode_close(dir);
	return ni;
}

static void set_reparse(ntfs_inode *ni, u32 tag, const unsigned char *data, u16 len)
{
	unsigned char buf[8 + 8192];
	memcpy(buf, &tag, 4);
	memcpy(buf + 4, &len, 2);
	memset(buf + 6, 0, 2);
	memcpy(buf + 8, data, len);
	if (ntfs_set_ntfs_reparse_data(ni, (const char *)buf, 8u + len, 0)) die("set reparse", "");
}

/* Symlink (tag 0xA000000C) or junction (0xA0000003) reparse data with both names. */
static void link_reparse(ntfs_inode *ni, const char *target, int junction)
{
	ntfschar sub[1024], print[1024];
	char subst[2100];
	snprintf(subst, sizeof subst, "%s%s", junction ? "\\??\\" : "", target);
	int sl = to_utf16(subst, sub, 1024) * 2, pl = to_utf16(target, print, 1024) * 2;
	unsigned char d[8192];
	int hdr = junction ? 8 : 12;
	u16 v[4] = { 0, (u16)sl, (u16)(sl + (junction ? 2 : 0)), (u16)pl };
	memcpy(d, v, 8);
	if (!junction) {
		u32 flags = target[0] == '/' ? 0 : 1; /* SYMLINK_FLAG_RELATIVE */
		memcpy(d + 8, &flags, 4);
	}
	memcpy(d + hdr, sub, (size_t)sl);
	int pos = hdr + sl;
	if (junction) { d[pos++] = 0; d[pos++] = 0; }
	memcpy(d + pos, print, (size_t)pl);
	pos += pl;
	if (junction) { d[pos++] = 0; d[pos++] = 0; }
	set_reparse(ni, junction ? 0xA0000003u : 0xA000000Cu, d, (u16)pos);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: ntfs_populate IMAGE < SPEC\n");
		return 2;
	}
	vol = ntfs_mount(argv[1], NTFS_MNT_NONE);
	if (!vol) die("mount", argv[1]);
	NVolSetCompression(vol);
	char line[8192];
	while (fgets(line, sizeof line, stdin)) {
		line_no++;
		line[strcspn(line, "\r\n")] = 0;
		if (!line[0] || line[0] == '#') continue;
		char *f[6] = { 0 };
		int nf = 0;
		for (char *t = strtok(line, " \t"); t && nf < 6; t = strtok(NULL, " \t")) f[nf++] = t;
		const char *cmd = f[0];
		/* Paths and names get their %XX escapes decoded; DATA decodes its own. */
		for (int i = 1; i < nf; i++)
			if (f[i][0] == '/' || (!strcmp(cmd, "stream") && i == 2)) unescape(f[i]);
		if (!strcmp(cmd, "mkdir") && nf == 2) {
			ntfs_inode_close(create(f[1], S_IFDIR));
		} else if (!strcmp(cmd, "compressdir") && nf == 2) {
			ntfs_inode *ni = create(f[1], S_IFDIR);
			ni->flags |= FILE_ATTR_COMPRESSED;
			ntfs_inode_mark_dirty(ni);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "file") && nf == 3) {
			ntfs_inode *ni = create(f[1], S_IFREG);
			write_attr(ni, AT_UNNAMED, 0, 0, f[2]);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "append") && nf == 4) {
			ntfs_inode *ni = open_path(f[1]);
			write_attr(ni, AT_UNNAMED, 0, atoll(f[2]), f[3]);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "sparse") && nf == 4) {
			ntfs_inode *ni = create(f[1], S_IFREG);
			write_attr(ni, AT_UNNAMED, 0, atoll(f[2]), f[3]);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "stream") && nf == 4) {
			ntfs_inode *ni = open_path(f[1]);
			ntfschar name[512];
			int n = to_utf16(f[2], name, 512);
			if (ntfs_attr_add(ni, AT_DATA, name, n, NULL, 0)) die("add stream", f[2]);
			write_attr(ni, name, n, 0, f[3]);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "link") && nf == 3) {
			ntfs_inode *ni = open_path(f[1]);
			ntfschar name[512];
			int n;
			ntfs_inode *dir = open_parent(f[2], name, &n);
			if (ntfs_link(ni, dir, name, n)) die("link", f[2]);
			ntfs_inode_close(dir);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "symlink") && nf == 3) {
			ntfs_inode *ni = create(f[1], S_IFREG);
			link_reparse(ni, f[2], 0);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "makelink") && nf == 3) {
			ntfs_inode *ni = open_path(f[1]);
			link_reparse(ni, f[2], 0);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "junction") && nf == 3) {
			ntfs_inode *ni = create(f[1], S_IFDIR);
			link_reparse(ni, f[2], 1);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "dosname") && nf == 3) {
			ntfs_inode *ni = open_path(f[1]);
			ntfschar name[512];
			int n;
			ntfs_inode *dir = open_parent(f[1], name, &n);
			/* Closes both inodes itself, on success and on failure. */
			if (ntfs_set_ntfs_dos_name(ni, dir, f[2], strlen(f[2]), 0)) die("dosname", f[2]);
		} else if (!strcmp(cmd, "encrypt") && nf == 2) {
			ntfs_inode *ni = open_path(f[1]);
			ni->flags |= FILE_ATTR_ENCRYPTED;
			ntfs_inode_mark_dirty(ni);
			ntfs_inode_close(ni);
		} else if (!strcmp(cmd, "wof") && nf == 5) {
			ntfs_inode *ni = create(f[1], S_IFREG);
			ntfs_attr *na = ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0);
			if (!na || ntfs_attr_truncate(na, atoll(f[3]))) die("truncate", f[1]);
			ntfs_attr_close(na);
			ntfschar name[32];
			int n = to_utf16("WofCompressedData", name, 32);
			if (ntfs_attr_add(ni, AT_DATA, name, n, NULL, 0)) die("add WofCompressedData", f[1]);
			write_attr(ni, name, n, 0, f[4]);
			u32 info[4] = { 1, 2, 1, (u32)atoi(f[2]) }; /* WOF v1, file provider, v1, algo */
			set_reparse(ni, 0x80000017u, (const unsigned char *)info, 16);
			ntfs_inode_close(ni);
		} else {
			errno = EINVAL;
			die("bad command", cmd);
		}
	}
	if (ntfs_umount(vol, FALSE)) die("umount", argv[1]);
	return 0;
}
