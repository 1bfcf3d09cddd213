def test_create_and_read_client(api):
    created = api.create_client("acme", "Acme")
    assert created["plan"] == "free"
    response = api.get("/api/admin/clients/acme/quota", key="read")
    assert response.status_code == 200
    assert response.get_json()["quota"]["monthlyGenerationLimit"] == 100
