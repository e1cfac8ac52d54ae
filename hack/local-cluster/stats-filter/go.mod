module meshops.local/statsfilter

go 1.26
