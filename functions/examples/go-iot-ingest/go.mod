module go-iot-ingest

go 1.21
