"${{ outPath = "/some/path"; }}"
