# Shared by tests/lab/lab.sh and tests/vm/vm.sh (sourced, not run).

# Print "deb URI SUITE COMPONENTS" for every enabled Debian source of this
# machine (one-line .list files and deb822 .sources files), keeping only the
# suites of this release (CODENAME, CODENAME-*), so third-party repos drop out.
apt_sources() {
	local codename=$1 f
	{
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[ -f "$f" ] || continue
			sed -e 's/#.*//' "$f" | awk '
				$1 == "deb" {
					line = $0
					sub(/^[ \t]*deb[ \t]+/, "", line)
					if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
					n = split(line, a, /[ \t]+/)
					if (n >= 3) { c = a[3]; for (i = 4; i <= n; i++) c = c " " a[i]; print a[1], a[2], c }
				}'
		done
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -f "$f" ] || continue
			awk '
				function flush(   nt, nu, ns, i, j, k, t, u, s) {
					if (enabled != "no" && types != "" && uris != "" && suites != "") {
						nt = split(types, t, /[ \t]+/); nu = split(uris, u, /[ \t]+/); ns = split(suites, s, /[ \t]+/)
						for (i = 1; i <= nt; i++) if (t[i] == "deb")
							for (j = 1; j <= nu; j++) for (k = 1; k <= ns; k++)
								if (u[j] != "" && s[k] != "") print u[j], s[k], (comps == "" ? "main" : comps)
					}
					types = uris = suites = comps = enabled = ""; last = ""
				}
				/^#/ { next }
				/^[ \t]*$/ { flush(); next }
				/^[ \t]/ { v = $0; gsub(/^[ \t]+|[ \t]+$/, "", v)
				           if (last == "types") types = types " " v; else if (last == "uris") uris = uris " " v
				           else if (last == "suites") suites = suites " " v; else if (last == "components") comps = comps " " v
				           next }
				{ key = tolower($0); sub(/:.*/, "", key); v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/[ \t]+$/, "", v)
				  last = key
				  if (key == "types") types = v; else if (key == "uris") uris = v; else if (key == "suites") suites = v
				  else if (key == "components") comps = v; else if (key == "enabled") enabled = tolower(v) }
				END { flush() }' "$f"
		done
	} | awk -v cn="$codename" '($2 == cn || index($2, cn "-") == 1) && $1 ~ /^(https?|file|copy):/ { print "deb " $0 }' | awk '!seen[$0]++'
}
