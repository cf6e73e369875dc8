module squall.dev/sdk

go 1.21
